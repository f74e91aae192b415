//! Workload objects (apps/v1, batch/v1, autoscaling/v1 Scale) read into what the projection
//! needs: how many pods the object runs and how many start at once.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::{
    api::{
        apps::v1::DeploymentStrategy,
        autoscaling::{v1::Scale, v2::HorizontalPodAutoscaler},
        core::v1::{Affinity, PodSpec, Toleration},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use crate::{error::Error, inventory::Inventory, profile::WorkloadRef};

/// The workload kinds the webhook evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl Kind {
    pub fn from_kind(kind: &str) -> Option<Kind> {
        Some(match kind {
            "Deployment" => Kind::Deployment,
            "StatefulSet" => Kind::StatefulSet,
            "DaemonSet" => Kind::DaemonSet,
            "ReplicaSet" => Kind::ReplicaSet,
            "Job" => Kind::Job,
            "CronJob" => Kind::CronJob,
            _ => return None,
        })
    }

    /// The kind whose `scale` subresource a resource name (`deployments`) addresses.
    pub fn from_scalable_resource(resource: &str) -> Option<Kind> {
        Some(match resource {
            "deployments" => Kind::Deployment,
            "statefulsets" => Kind::StatefulSet,
            "replicasets" => Kind::ReplicaSet,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
        }
    }
}

/// How pods of an update are replaced.
#[derive(Clone, Debug, PartialEq)]
pub enum Rollout {
    /// Deployment RollingUpdate (defaults 25%/25%) and DaemonSet RollingUpdate (1/0).
    Rolling {
        max_surge: IntOrString,
        max_unavailable: IntOrString,
        /// DaemonSets round both up; Deployments round maxUnavailable down.
        round_unavailable_up: bool,
    },
    /// All pods replaced at once (Deployment Recreate).
    Recreate,
    /// Pods replaced only when someone deletes them (DaemonSet/StatefulSet OnDelete).
    OnDelete,
    /// StatefulSet OrderedReady: one pod at a time.
    OneAtATime,
    /// StatefulSet Parallel + RollingUpdate: maxUnavailable at a time.
    Parallel { max_unavailable: IntOrString },
    /// A template change rolls nothing (ReplicaSet, Job).
    None,
    /// Every run starts all its pods (CronJob).
    EveryRun,
}

/// How the number of pods follows from the object.
#[derive(Clone, Debug, PartialEq)]
pub enum Size {
    Replicas(u64),
    /// One pod per eligible node.
    PerNode,
}

/// A workload object, read for projection.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: Kind,
    pub reference: WorkloadRef,
    pub annotations: BTreeMap<String, String>,
    /// The first container's image, for the image fallback. `None` for a `scale` request.
    pub image: Option<String>,
    /// What of the pod spec decides where a DaemonSet runs (nodeSelector, affinity,
    /// tolerations); `None` for a `scale` request.
    pub pod_spec: Option<Box<PodSpec>>,
    /// The pod template as JSON text, to tell a rollout from a scale; `None` for `scale`.
    pub template_text: Option<String>,
    pub size: Size,
    pub rollout: Rollout,
    /// Whether pods start all at once on create (false: OrderedReady StatefulSet).
    pub create_all_at_once: bool,
    /// The controller that owns this object and was judged for its pods (`Deployment web`
    /// for a Deployment's ReplicaSet, `CronJob report` for a scheduled Job).
    pub judged_owner: Option<String>,
}

/// The owner whose judgement covers an object of `kind`: any controller of a ReplicaSet
/// (a Deployment, or an operator's own controller), the CronJob of a Job.
fn judged_owner(kind: Kind, metadata: &ObjectMeta) -> Option<String> {
    let owner = metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let covered = match kind {
        Kind::ReplicaSet => true,
        Kind::Job => owner.kind == "CronJob" && owner.api_version.starts_with("batch/"),
        _ => false,
    };
    covered.then(|| format!("{} {}", owner.kind, owner.name))
}

fn parse_typed<T: DeserializeOwned>(
    document: &str,
    at: &str,
    value: serde_json::Value,
) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| field_error(document, at, &e))
}

/// Parses JSON text found at `at` (`spec`, `""` for a whole object) of `document`; an error
/// names the field that failed (`field `spec.replicas`: invalid type: …`).
pub fn parse_json<'a, T: Deserialize<'a>>(
    document: &str,
    at: &str,
    text: &'a str,
) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value =
        serde_path_to_error::deserialize(&mut de).map_err(|e| field_error(document, at, &e))?;
    de.end().map_err(|e| Error::InvalidWorkload {
        document: document.to_owned(),
        message: e.to_string(),
    })?;
    Ok(value)
}

fn field_error(
    document: &str,
    at: &str,
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> Error {
    let path = e.path().to_string();
    let field = match (at, path.as_str()) {
        ("", ".") => String::new(),
        (at, ".") => format!("field `{at}`: "),
        ("", path) => format!("field `{path}`: "),
        (at, path) => format!("field `{at}.{path}`: "),
    };
    Error::InvalidWorkload {
        document: document.to_owned(),
        message: format!("{field}{}", e.inner()),
    }
}

/// An object's `spec`: parsed JSON (manifests) or raw JSON text (admission requests).
#[derive(Debug)]
pub enum Spec<'a> {
    Value(serde_json::Value),
    Raw(&'a str),
}

/// The fields of any workload kind's `spec` the projection reads; the rest is skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecIn<'a> {
    #[serde(default)]
    replicas: Option<i32>,
    #[serde(default)]
    selector: Option<LabelSelector>,
    #[serde(borrow, default)]
    template: Option<&'a RawValue>,
    #[serde(default)]
    strategy: Option<DeploymentStrategy>,
    #[serde(default)]
    update_strategy: Option<UpdateStrategyIn>,
    #[serde(default)]
    pod_management_policy: Option<String>,
    #[serde(default)]
    parallelism: Option<i32>,
    #[serde(default)]
    completions: Option<i32>,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(borrow, default)]
    job_template: Option<JobTemplateIn<'a>>,
}

#[derive(Debug, Deserialize)]
struct JobTemplateIn<'a> {
    #[serde(borrow, default)]
    spec: Option<Box<SpecIn<'a>>>,
}

/// DaemonSet and StatefulSet update strategies.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateStrategyIn {
    #[serde(rename = "type", default)]
    type_: Option<String>,
    #[serde(default)]
    rolling_update: Option<RollingIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RollingIn {
    #[serde(default)]
    max_surge: Option<IntOrString>,
    #[serde(default)]
    max_unavailable: Option<IntOrString>,
}

#[derive(Debug, Default, Deserialize)]
struct TemplateIn {
    #[serde(default)]
    spec: Option<PodSpecIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecIn {
    #[serde(default)]
    node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    affinity: Option<Affinity>,
    #[serde(default)]
    tolerations: Option<Vec<Toleration>>,
    #[serde(default)]
    containers: Option<Vec<ContainerIn>>,
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default)]
    service_account_name: Option<String>,
    /// The deprecated alias, which the API server still fills in.
    #[serde(default)]
    service_account: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ContainerIn {
    #[serde(default)]
    image: Option<String>,
}

fn count(value: Option<i32>, default: u64) -> u64 {
    value.map_or(default, |v| u64::try_from(v).unwrap_or(0))
}

impl Workload {
    /// Reads an object of `kind` from JSON. `document` names it in errors.
    pub fn from_value(
        kind: Kind,
        document: &str,
        mut value: serde_json::Value,
    ) -> Result<Workload, Error> {
        let metadata = match value.get_mut("metadata").map(serde_json::Value::take) {
            None | Some(serde_json::Value::Null) => {
                return Err(Error::InvalidWorkload {
                    document: document.to_owned(),
                    message: "missing field `metadata`".to_owned(),
                });
            }
            Some(metadata) => parse_typed(document, "metadata", metadata)?,
        };
        let spec = match value.get_mut("spec").map(serde_json::Value::take) {
            None | Some(serde_json::Value::Null) => None,
            Some(spec) => Some(Spec::Value(spec)),
        };
        Self::from_parts(kind, document, metadata, spec)
    }

    /// Reads an object from its metadata and its `spec`, which the admission path passes as
    /// raw JSON so that it is parsed once, into only the fields the projection uses.
    pub fn from_parts(
        kind: Kind,
        document: &str,
        metadata: ObjectMeta,
        spec: Option<Spec<'_>>,
    ) -> Result<Workload, Error> {
        let missing = |field: &str| Error::InvalidWorkload {
            document: document.to_owned(),
            message: format!("missing field `{field}`"),
        };
        let text = match spec.ok_or_else(|| missing("spec"))? {
            Spec::Raw(text) => std::borrow::Cow::Borrowed(text),
            Spec::Value(value) => std::borrow::Cow::Owned(value.to_string()),
        };
        let spec: SpecIn<'_> = parse_json(document, "spec", &text)?;
        // The API server would not accept these absent or empty; the projection needs them.
        let selector_ok = |s: &Option<LabelSelector>| {
            s.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            })
        };
        if kind != Kind::Job && kind != Kind::CronJob && !selector_ok(&spec.selector) {
            return Err(missing("spec.selector"));
        }
        let (template_raw, size, rollout, all_at_once, template_field) = match kind {
            Kind::Deployment => {
                let strategy = spec.strategy.unwrap_or_default();
                let rollout = if strategy.type_.as_deref() == Some("Recreate") {
                    Rollout::Recreate
                } else {
                    let rolling = strategy.rolling_update.unwrap_or_default();
                    let quarter = || IntOrString::String("25%".to_owned());
                    Rollout::Rolling {
                        max_surge: rolling.max_surge.unwrap_or_else(quarter),
                        max_unavailable: rolling.max_unavailable.unwrap_or_else(quarter),
                        round_unavailable_up: false,
                    }
                };
                let size = Size::Replicas(count(spec.replicas, 1));
                (spec.template, size, rollout, true, "spec.template")
            }
            Kind::ReplicaSet => {
                let size = Size::Replicas(count(spec.replicas, 1));
                (spec.template, size, Rollout::None, true, "spec.template")
            }
            Kind::DaemonSet => {
                let strategy = spec.update_strategy.unwrap_or_default();
                let rollout = if strategy.type_.as_deref() == Some("OnDelete") {
                    Rollout::OnDelete
                } else {
                    let rolling = strategy.rolling_update.unwrap_or_default();
                    Rollout::Rolling {
                        max_surge: rolling.max_surge.unwrap_or(IntOrString::Int(0)),
                        max_unavailable: rolling.max_unavailable.unwrap_or(IntOrString::Int(1)),
                        round_unavailable_up: true,
                    }
                };
                (spec.template, Size::PerNode, rollout, true, "spec.template")
            }
            Kind::StatefulSet => {
                let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
                let strategy = spec.update_strategy.unwrap_or_default();
                let rollout = if strategy.type_.as_deref() == Some("OnDelete") {
                    Rollout::OnDelete
                } else if parallel {
                    Rollout::Parallel {
                        max_unavailable: strategy
                            .rolling_update
                            .and_then(|r| r.max_unavailable)
                            .unwrap_or(IntOrString::Int(1)),
                    }
                } else {
                    Rollout::OneAtATime
                };
                let size = Size::Replicas(count(spec.replicas, 1));
                (spec.template, size, rollout, parallel, "spec.template")
            }
            Kind::Job => {
                let size = Size::Replicas(job_pods(spec.parallelism, spec.completions));
                (spec.template, size, Rollout::None, true, "spec.template")
            }
            Kind::CronJob => {
                if spec.schedule.as_deref().is_none_or(str::is_empty) {
                    return Err(missing("spec.schedule"));
                }
                let job = spec
                    .job_template
                    .and_then(|t| t.spec)
                    .ok_or_else(|| missing("spec.jobTemplate.spec"))?;
                let size = Size::Replicas(job_pods(job.parallelism, job.completions));
                (
                    job.template,
                    size,
                    Rollout::EveryRun,
                    true,
                    "spec.jobTemplate.spec.template",
                )
            }
        };
        let template_raw = template_raw.ok_or_else(|| missing(template_field))?;
        let template: TemplateIn = parse_json(document, template_field, template_raw.get())?;
        let pod = template.spec.unwrap_or_default();
        let containers = pod.containers.unwrap_or_default();
        if containers.is_empty() {
            return Err(missing(&format!("{template_field}.spec.containers")));
        }
        let pod_spec = PodSpec {
            node_selector: pod.node_selector,
            affinity: pod.affinity,
            tolerations: pod.tolerations,
            host_network: pod.host_network,
            service_account_name: pod.service_account_name.or(pod.service_account),
            ..PodSpec::default()
        };
        let judged_owner = judged_owner(kind, &metadata);
        Ok(Workload {
            kind,
            judged_owner,
            reference: WorkloadRef {
                namespace: metadata.namespace.unwrap_or_default(),
                kind: kind.as_str().to_owned(),
                name: metadata.name.unwrap_or_default(),
            },
            annotations: metadata.annotations.unwrap_or_default(),
            image: containers.into_iter().next().and_then(|c| c.image),
            pod_spec: Some(Box::new(pod_spec)),
            template_text: Some(template_raw.get().to_owned()),
            size,
            rollout,
            create_all_at_once: all_at_once,
        })
    }

    /// Reads an autoscaling/v1 `Scale` object for `kind`'s `scale` subresource.
    pub fn from_scale(
        kind: Kind,
        document: &str,
        value: serde_json::Value,
    ) -> Result<Workload, Error> {
        let scale: Scale = parse_typed(document, "", value)?;
        let replicas = scale.spec.and_then(|s| s.replicas);
        Ok(Self::from_scale_parts(kind, scale.metadata, replicas))
    }

    /// A `scale` request: the target's metadata and the replicas asked for.
    pub fn from_scale_parts(kind: Kind, metadata: ObjectMeta, replicas: Option<i32>) -> Workload {
        Workload {
            kind,
            reference: WorkloadRef {
                namespace: metadata.namespace.unwrap_or_default(),
                kind: kind.as_str().to_owned(),
                name: metadata.name.unwrap_or_default(),
            },
            annotations: metadata.annotations.unwrap_or_default(),
            image: None,
            pod_spec: None,
            template_text: None,
            size: Size::Replicas(count(replicas, 0)),
            // Scaling starts all added pods; without the object we assume the worst.
            rollout: Rollout::None,
            create_all_at_once: true,
            judged_owner: None,
        }
    }

    /// The service account its pods run as, whose requests the API server places in a
    /// priority level: the pod template's, else `default` (as the API server fills it in).
    pub fn service_account(&self) -> &str {
        self.pod_spec
            .as_ref()
            .and_then(|p| p.service_account_name.as_deref())
            .filter(|name| !name.is_empty())
            .unwrap_or("default")
    }

    /// The replicas a `scale` request asks for (0 for a per-node workload).
    pub fn replicas(&self) -> u64 {
        match self.size {
            Size::Replicas(n) => n,
            Size::PerNode => 0,
        }
    }

    /// This object with `replicas` replicas, as a `scale` request of it reads: everything
    /// else (annotations, image, template, strategy) unchanged.
    pub fn with_replicas(&self, replicas: u64) -> Workload {
        Workload {
            size: Size::Replicas(replicas),
            ..self.clone()
        }
    }

    /// Pods this object runs: replicas (raised to an HPA's maxReplicas where one targets it),
    /// or eligible nodes for a DaemonSet.
    pub fn pods(&self, inventory: &Inventory, hpa_max: Option<u64>) -> u64 {
        match &self.size {
            Size::Replicas(n) => hpa_max.map_or(*n, |max| max.max(*n)),
            Size::PerNode => self
                .pod_spec
                .as_ref()
                .map_or(0, |spec| inventory.eligible_nodes(spec)),
        }
    }

    /// Pods that start at once when this object replaces `old` (or is created, `old` =
    /// `None`), running `pods` pods where `old` ran `old_pods`.
    pub fn concurrent_starts(&self, old: Option<&Workload>, pods: u64, old_pods: u64) -> u64 {
        self.concurrent_starts_with(&self.rollout, old, pods, old_pods)
    }

    /// [`Self::concurrent_starts`] had the object asked for `rollout` instead of its own.
    pub fn concurrent_starts_with(
        &self,
        rollout: &Rollout,
        old: Option<&Workload>,
        pods: u64,
        old_pods: u64,
    ) -> u64 {
        let Some(old) = old else {
            return if self.create_all_at_once || *rollout == Rollout::EveryRun {
                pods
            } else {
                pods.min(1)
            };
        };
        let added = pods.saturating_sub(old_pods);
        let template_changed = self.template_changed(old);
        let batch = match rollout {
            Rollout::EveryRun => pods,
            _ if !template_changed => 0,
            Rollout::Recreate => pods,
            Rollout::Rolling {
                max_surge,
                max_unavailable,
                round_unavailable_up,
            } => {
                let surge = scaled(max_surge, pods, true);
                let unavailable = scaled(max_unavailable, pods, *round_unavailable_up);
                (surge + unavailable).max(1)
            }
            Rollout::Parallel { max_unavailable } => scaled(max_unavailable, pods, true).max(1),
            Rollout::OneAtATime => 1,
            Rollout::OnDelete | Rollout::None => 0,
        };
        let added_at_once = if *rollout == Rollout::OneAtATime {
            added.min(1)
        } else {
            added
        };
        (batch + added_at_once).min(pods)
    }

    /// Whether the pod template differs from `old`'s. A `scale` request carries no template:
    /// it changes only replicas.
    pub fn template_changed(&self, old: &Workload) -> bool {
        match (&self.template_text, &old.template_text) {
            (Some(new), Some(old)) => new != old,
            _ => false,
        }
    }

    /// The value of the break-glass annotation, if it has a reason.
    pub fn break_glass_reason(&self) -> Option<&str> {
        self.annotations
            .get(crate::budget::BREAK_GLASS_ANNOTATION)
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
    }
}

fn job_pods(parallelism: Option<i32>, completions: Option<i32>) -> u64 {
    let parallelism = count(parallelism, 1);
    completions.map_or(parallelism, |c| parallelism.min(count(Some(c), 1)))
}

/// An int-or-percent of `total`, as the controllers compute it.
pub fn scaled(value: &IntOrString, total: u64, round_up: bool) -> u64 {
    match value {
        IntOrString::Int(n) => u64::try_from(*n).unwrap_or(0),
        IntOrString::String(s) => {
            let percent: u64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let product = percent * total;
            if round_up {
                product.div_ceil(100)
            } else {
                product / 100
            }
        }
    }
}

/// HorizontalPodAutoscalers by target: (namespace, kind, name) → maxReplicas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Autoscalers {
    pub max_replicas: HashMap<WorkloadRef, u64>,
}

impl Autoscalers {
    pub fn insert(&mut self, hpa: &HorizontalPodAutoscaler) {
        let spec = &hpa.spec;
        let target = WorkloadRef {
            namespace: hpa.metadata.namespace.clone().unwrap_or_default(),
            kind: spec.scale_target_ref.kind.clone(),
            name: spec.scale_target_ref.name.clone(),
        };
        self.max_replicas
            .insert(target, count(Some(spec.max_replicas), 0));
    }

    pub fn max_for(&self, workload: &WorkloadRef) -> Option<u64> {
        self.max_replicas.get(workload).copied()
    }
}

#[cfg(test)]
mod tests;
