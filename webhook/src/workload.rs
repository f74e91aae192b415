//! Workload objects (apps/v1, batch/v1, autoscaling/v1 Scale) read into what the projection
//! needs: how many pods the object runs and how many start at once.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSetSpec, DeploymentSpec, ReplicaSetSpec, StatefulSetSpec},
        autoscaling::{v1::Scale, v2::HorizontalPodAutoscaler},
        batch::v1::{CronJobSpec, JobSpec},
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use serde::de::DeserializeOwned;

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
    /// The pod template, `None` for a `scale` request.
    pub template: Option<Box<PodTemplateSpec>>,
    pub size: Size,
    pub rollout: Rollout,
    /// Whether pods start all at once on create (false: OrderedReady StatefulSet).
    pub create_all_at_once: bool,
}

fn parse_typed<T: DeserializeOwned>(document: &str, value: serde_json::Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::InvalidWorkload {
        document: document.to_owned(),
        message: e.to_string(),
    })
}

/// An object's `spec`: parsed JSON (manifests) or raw JSON text (admission requests).
#[derive(Debug)]
pub enum Spec<'a> {
    Value(serde_json::Value),
    Raw(&'a str),
}

impl Spec<'_> {
    fn parse<T: DeserializeOwned>(self, document: &str) -> Result<T, Error> {
        match self {
            Spec::Value(value) => parse_typed(document, value),
            Spec::Raw(text) => serde_json::from_str(text).map_err(|e| Error::InvalidWorkload {
                document: document.to_owned(),
                message: e.to_string(),
            }),
        }
    }
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
            Some(metadata) => parse_typed(document, metadata)?,
        };
        let spec = match value.get_mut("spec").map(serde_json::Value::take) {
            None | Some(serde_json::Value::Null) => None,
            Some(spec) => Some(Spec::Value(spec)),
        };
        Self::from_parts(kind, document, metadata, spec)
    }

    /// Reads an object from its metadata and its `spec`, which the admission path passes as
    /// raw JSON so that it is parsed once, straight into the typed spec.
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
        let spec = spec.ok_or_else(|| missing("spec"))?;
        // k8s-openapi fills absent required fields with defaults; the API server would not
        // accept them absent or empty, and the projection relies on them.
        let selector_ok = |s: &LabelSelector| {
            s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
        };
        let template_ok =
            |t: &PodTemplateSpec| t.spec.as_ref().is_some_and(|s| !s.containers.is_empty());
        let (metadata, template, size, rollout, all_at_once) = match kind {
            Kind::Deployment => {
                let spec: DeploymentSpec = spec.parse(document)?;
                if !selector_ok(&spec.selector) {
                    return Err(missing("spec.selector"));
                }
                if !template_ok(&spec.template) {
                    return Err(missing("spec.template.spec.containers"));
                }
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
                (metadata, spec.template, size, rollout, true)
            }
            Kind::ReplicaSet => {
                let spec: ReplicaSetSpec = spec.parse(document)?;
                if !selector_ok(&spec.selector) {
                    return Err(missing("spec.selector"));
                }
                let template = spec
                    .template
                    .filter(template_ok)
                    .ok_or_else(|| missing("spec.template.spec.containers"))?;
                let size = Size::Replicas(count(spec.replicas, 1));
                (metadata, template, size, Rollout::None, true)
            }
            Kind::DaemonSet => {
                let spec: DaemonSetSpec = spec.parse(document)?;
                if !selector_ok(&spec.selector) {
                    return Err(missing("spec.selector"));
                }
                if !template_ok(&spec.template) {
                    return Err(missing("spec.template.spec.containers"));
                }
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
                (metadata, spec.template, Size::PerNode, rollout, true)
            }
            Kind::StatefulSet => {
                let spec: StatefulSetSpec = spec.parse(document)?;
                if !selector_ok(&spec.selector) {
                    return Err(missing("spec.selector"));
                }
                if !template_ok(&spec.template) {
                    return Err(missing("spec.template.spec.containers"));
                }
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
                (metadata, spec.template, size, rollout, parallel)
            }
            Kind::Job => {
                let spec: JobSpec = spec.parse(document)?;
                if !template_ok(&spec.template) {
                    return Err(missing("spec.template.spec.containers"));
                }
                let size = Size::Replicas(job_pods(spec.parallelism, spec.completions));
                (metadata, spec.template, size, Rollout::None, true)
            }
            Kind::CronJob => {
                let spec: CronJobSpec = spec.parse(document)?;
                if spec.schedule.is_empty() {
                    return Err(missing("spec.schedule"));
                }
                let job = spec
                    .job_template
                    .spec
                    .filter(|j| template_ok(&j.template))
                    .ok_or_else(|| missing("spec.jobTemplate.spec.template.spec.containers"))?;
                let size = Size::Replicas(job_pods(job.parallelism, job.completions));
                (metadata, job.template, size, Rollout::EveryRun, true)
            }
        };
        let image = template
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone());
        Ok(Workload {
            kind,
            reference: WorkloadRef {
                namespace: metadata.namespace.unwrap_or_default(),
                kind: kind.as_str().to_owned(),
                name: metadata.name.unwrap_or_default(),
            },
            annotations: metadata.annotations.unwrap_or_default(),
            image,
            template: Some(Box::new(template)),
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
        let scale: Scale = parse_typed(document, value)?;
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
            template: None,
            size: Size::Replicas(count(replicas, 0)),
            // Scaling starts all added pods; without the object we assume the worst.
            rollout: Rollout::None,
            create_all_at_once: true,
        }
    }

    /// Pods this object runs: replicas (raised to an HPA's maxReplicas where one targets it),
    /// or eligible nodes for a DaemonSet.
    pub fn pods(&self, inventory: &Inventory, hpa_max: Option<u64>) -> u64 {
        match &self.size {
            Size::Replicas(n) => hpa_max.map_or(*n, |max| max.max(*n)),
            Size::PerNode => self
                .template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .map_or(0, |spec| inventory.eligible_nodes(spec)),
        }
    }

    /// Pods that start at once when this object replaces `old` (or is created, `old` =
    /// `None`), running `pods` pods where `old` ran `old_pods`.
    pub fn concurrent_starts(&self, old: Option<&Workload>, pods: u64, old_pods: u64) -> u64 {
        let Some(old) = old else {
            return if self.create_all_at_once || self.rollout == Rollout::EveryRun {
                pods
            } else {
                pods.min(1)
            };
        };
        let added = pods.saturating_sub(old_pods);
        let template_changed = match (&self.template, &old.template) {
            (Some(new), Some(old)) => new != old,
            _ => false,
        };
        let batch = match &self.rollout {
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
        let added_at_once = if self.rollout == Rollout::OneAtATime {
            added.min(1)
        } else {
            added
        };
        (batch + added_at_once).min(pods)
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
