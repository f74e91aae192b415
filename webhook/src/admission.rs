//! AdmissionReview v1 in, AdmissionReview v1 out: the shell around [`decision::decide`].
//! Reads only in-memory state; the refreshers in [`crate::server`] replace it.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use collector::watch::Health;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::{
    budget::{ControlPlaneBudget, ControlPlaneBudgetSpec},
    decision::{self, Context, Decision, Outcome},
    error::Error,
    inventory::Inventory,
    metrics::Metrics,
    parents::{NoParents, ParentLookup},
    profile::Snapshot,
    reservation::{Ledger, Reservation},
    review::{
        self, MetadataIn, ObjectIn, RequestIn, ResponseOut, ReviewIn, ReviewOut, ScaleIn, StatusOut,
    },
    sources::apiserver::CapacityStore,
    workload::{Autoscalers, Kind, Spec, Workload, parse_json},
};

/// The `reason` of the fail-opens metric for an object the webhook cannot parse.
pub const FAIL_OPEN_UNPARSEABLE: &str = "unparseable";

/// A request the webhook cannot answer with a decision: HTTP 400 with this message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// The budget in force, by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub name: String,
    pub spec: ControlPlaneBudgetSpec,
}

impl From<ControlPlaneBudget> for Budget {
    fn from(b: ControlPlaneBudget) -> Self {
        Budget {
            name: b.metadata.name.unwrap_or_default(),
            spec: b.spec,
        }
    }
}

/// Profile data and when it was fetched.
#[derive(Debug)]
pub struct Data {
    pub snapshot: Snapshot,
    pub fetched_at: SystemTime,
}

/// Everything the admission path reads.
#[derive(Debug)]
pub struct State {
    budget: RwLock<Arc<Budget>>,
    data: RwLock<Option<Arc<Data>>>,
    inventory: RwLock<Arc<Inventory>>,
    autoscalers: RwLock<Arc<Autoscalers>>,
    /// False from [`State::await_inventory`] until the node watch has listed once.
    inventory_listed: AtomicBool,
    /// Admitted increases not yet measured (see [`crate::reservation`]).
    ledger: Arc<Mutex<Ledger>>,
    /// Where admitted increases go to be shared with the other replicas (`--kube`).
    share: OnceLock<mpsc::UnboundedSender<Reservation>>,
    parents: RwLock<Arc<dyn ParentLookup>>,
    pub metrics: Metrics,
    /// The API server's capacity per priority level, for `auto` request limits.
    pub apiserver: CapacityStore,
}

/// The warning of a DaemonSet change allowed before the node inventory was listed.
pub const INVENTORY_NOT_LISTED: &str = "headroom: the node inventory has not been listed yet, so \
                                        this DaemonSet's pods cannot be counted; allowed \
                                        unevaluated (fail-open)";

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|e| e.into_inner()) = value;
}

impl State {
    pub fn new(budget: Budget, inventory: Inventory) -> State {
        State::with_ledger(budget, inventory, Arc::default())
    }

    /// A state whose reservations are `ledger`, shared with other states in this process.
    pub fn with_ledger(budget: Budget, inventory: Inventory, ledger: Arc<Mutex<Ledger>>) -> State {
        State {
            budget: RwLock::new(Arc::new(budget)),
            data: RwLock::new(None),
            inventory: RwLock::new(Arc::new(inventory)),
            autoscalers: RwLock::new(Arc::new(Autoscalers::default())),
            inventory_listed: AtomicBool::new(true),
            ledger,
            share: OnceLock::new(),
            parents: RwLock::new(Arc::new(NoParents)),
            metrics: Metrics::default(),
            apiserver: CapacityStore::default(),
        }
    }

    /// Sends every admitted increase to `share` too (set once, in `--kube` mode).
    pub fn share_reservations(&self, share: mpsc::UnboundedSender<Reservation>) {
        let _ = self.share.set(share);
    }

    /// Adds reservations made by other replicas.
    pub fn merge_reservations(&self, reservations: impl IntoIterator<Item = Reservation>) {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(reservations);
    }

    /// The reservations in force.
    pub fn reservations(&self) -> Vec<Reservation> {
        let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        ledger.reservations().cloned().collect()
    }

    /// Where `*/scale` reviews find their parent object (standalone: nowhere).
    pub fn set_parents(&self, parents: Arc<dyn ParentLookup>) {
        write(&self.parents, parents);
    }

    pub fn set_budget(&self, budget: Budget) {
        write(&self.budget, Arc::new(budget));
    }

    pub fn budget(&self) -> Arc<Budget> {
        read(&self.budget)
    }

    /// Replaces the profile data; reservations it shows in full end.
    pub fn set_snapshot(&self, snapshot: Snapshot, fetched_at: SystemTime) {
        let measured_at = snapshot.measured_at().unwrap_or(fetched_at);
        write(
            &self.data,
            Some(Arc::new(Data {
                snapshot,
                fetched_at,
            })),
        );
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire(measured_at);
    }

    pub fn set_inventory(&self, inventory: Inventory) {
        write(&self.inventory, Arc::new(inventory));
    }

    pub fn set_autoscalers(&self, autoscalers: Autoscalers) {
        write(&self.autoscalers, Arc::new(autoscalers));
    }

    pub fn inventory(&self) -> Arc<Inventory> {
        read(&self.inventory)
    }

    pub fn autoscalers(&self) -> Arc<Autoscalers> {
        read(&self.autoscalers)
    }

    pub fn data(&self) -> Option<Arc<Data>> {
        read(&self.data)
    }

    /// Age of the newest measurement in the profile data (not of the fetch); `None`
    /// before the first fetch or when the data holds no measurement. For data that does
    /// not say when it was measured (built by hand), the time it was set.
    pub fn data_age(&self) -> Option<Duration> {
        let data = self.data()?;
        let measured_at = match data.snapshot.nodes {
            Some(_) => data.snapshot.measured_at()?,
            None => data.fetched_at,
        };
        Some(
            SystemTime::now()
                .duration_since(measured_at)
                .unwrap_or_default(),
        )
    }

    /// The inventory comes from a node watch: until [`State::inventory_listed`], a
    /// DaemonSet is allowed unevaluated rather than projected at zero pods.
    pub fn await_inventory(&self) {
        self.inventory_listed.store(false, Ordering::Relaxed);
    }

    /// The node watch has published a complete inventory.
    pub fn inventory_listed(&self) {
        self.inventory_listed.store(true, Ordering::Relaxed);
    }

    /// The in-cluster watches, for readiness and the metrics (set once, with `--kube`).
    pub fn set_watches(&self, health: Arc<Health>) {
        let _ = self.metrics.watches.set(health);
    }

    /// Ready once profile data has arrived and every watch has listed.
    pub fn ready(&self) -> bool {
        self.not_ready_because().is_empty()
    }

    /// Why not ready, one line each; empty when ready.
    pub fn not_ready_because(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.data().is_none() {
            problems.push("no profile data yet".to_owned());
        }
        if self.budget().spec.limits.requests_auto() && !self.apiserver.has_levels() {
            problems.push(
                "apiserverRequestsPerSecond is auto and no API server capacity figures yet \
                 (from Prometheus, or two scrapes of its /metrics)"
                    .to_owned(),
            );
        }
        if let Some(health) = self.metrics.watches.get() {
            problems.extend(health.readiness().problems);
        }
        problems
    }

    /// What readiness should mention while ready (an API not served and what is done
    /// without it).
    pub fn readiness_notes(&self) -> Vec<String> {
        self.metrics
            .watches
            .get()
            .map(|h| h.readiness().notes)
            .unwrap_or_default()
    }

    /// Answers one AdmissionReview body with a serialized AdmissionReview.
    pub fn review(&self, body: &[u8]) -> Result<Vec<u8>, BadRequest> {
        let started = Instant::now();
        let result = self.review_inner(body);
        self.metrics
            .admission_duration
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.invalid_requests.inc();
        }
        result
    }

    fn review_inner(&self, body: &[u8]) -> Result<Vec<u8>, BadRequest> {
        let review: ReviewIn<'_> = serde_json::from_slice(body)
            .map_err(|e| BadRequest(format!("body is not an AdmissionReview: {e}")))?;
        if review.api_version != review::API_VERSION || review.kind != review::KIND {
            return Err(BadRequest(format!(
                "expected apiVersion {} kind {}, got {} {}",
                review::API_VERSION,
                review::KIND,
                review.api_version,
                review.kind
            )));
        }
        let request = review
            .request
            .ok_or_else(|| BadRequest("AdmissionReview has no request".to_owned()))?;
        if request.uid.is_empty() {
            return Err(BadRequest("request.uid is empty".to_owned()));
        }
        let budget = self.budget();
        let mode = budget.spec.mode.as_str();
        let allow = || respond(&request.uid, true, None, &[], &BTreeMap::new());
        let update = match request.operation.as_str() {
            "CREATE" => false,
            "UPDATE" => true,
            "DELETE" | "CONNECT" => {
                let kind = Kind::from_kind(&request.kind.kind).map_or("other", Kind::as_str);
                self.metrics
                    .record_decision(mode, Outcome::NoAddedLoad.as_str(), kind);
                return Ok(allow());
            }
            other => return Err(BadRequest(format!("unknown operation `{other}`"))),
        };
        let kind = supported_kind(&request)?;
        let scale = request.sub_resource.is_some();
        let namespace = request.namespace.as_deref().unwrap_or_default();
        // Err(Ok(_)): the object is missing (400); Err(Err(_)): we cannot parse it.
        let read_object = |object: Option<&RawValue>, which: &str| {
            let object = object.ok_or_else(|| Ok(format!("request.{which} is missing")))?;
            let document = format!("request.{which}");
            read_workload(kind, scale, &document, object.get(), namespace)
                .map_err(|e| Err(e.to_string()))
        };
        let workload = match read_object(request.object, "object") {
            Ok(w) => w,
            Err(Ok(missing)) => return Err(BadRequest(missing)),
            Err(Err(unparseable)) => {
                return Ok(self.unparseable(&request, mode, kind, &unparseable));
            }
        };
        let old = if update {
            match read_object(request.old_object, "oldObject") {
                Ok(w) => Some(w),
                Err(Ok(missing)) => return Err(BadRequest(missing)),
                // An old object we cannot read: evaluate as a create (the worst case).
                Err(Err(unparseable)) => {
                    tracing::warn!(
                        uid = %request.uid,
                        error = %unparseable,
                        "cannot parse oldObject; evaluating the change as a create"
                    );
                    None
                }
            }
        } else {
            None
        };
        if kind == Kind::DaemonSet && !self.inventory_listed.load(Ordering::Relaxed) {
            self.metrics
                .record_decision(mode, Outcome::FailOpen.as_str(), kind.as_str());
            self.metrics.record_fail_open("inventory");
            tracing::warn!(uid = %request.uid, workload = %workload.reference, "{INVENTORY_NOT_LISTED}");
            let warnings = [INVENTORY_NOT_LISTED.to_owned()];
            return Ok(respond(
                &request.uid,
                true,
                None,
                &warnings,
                &BTreeMap::new(),
            ));
        }
        let (workload, old, unread_parent) = if scale {
            self.with_parent(kind, workload, old)
        } else {
            (workload, old, None)
        };
        let dry_run = request.dry_run.unwrap_or(false);
        let mut decision = self.decide(&budget, &workload, old.as_ref(), dry_run);
        // Only where the parent could have changed the answer.
        let judged = matches!(
            decision.outcome,
            Outcome::Allowed
                | Outcome::Denied
                | Outcome::Warned
                | Outcome::Audited
                | Outcome::Canary
        );
        if let Some(warning) = unread_parent.filter(|_| judged) {
            decision.warnings.push(decision::fit_warning(&warning));
        }
        self.metrics
            .record_decision(mode, decision.outcome.as_str(), kind.as_str());
        if let Some(reason) = decision.fail_open {
            self.metrics.record_fail_open(reason.as_str());
        }
        tracing::debug!(
            uid = %request.uid,
            workload = %workload.reference,
            outcome = decision.outcome.as_str(),
            dry_run,
            "admission decision"
        );
        let status = (!decision.allowed()).then(|| StatusOut {
            code: 403,
            message: &decision.message,
            reason: "Forbidden",
        });
        Ok(respond(
            &request.uid,
            decision.allowed(),
            status,
            &decision.warnings,
            &decision.audit_annotations,
        ))
    }

    /// A `scale` review judged like its parent object with the replicas asked for; without
    /// the parent, the Scale alone and a warning naming what was not checked.
    fn with_parent(
        &self,
        kind: Kind,
        scale: Workload,
        old: Option<Workload>,
    ) -> (Workload, Option<Workload>, Option<String>) {
        let r = &scale.reference;
        match read(&self.parents).parent(kind, &r.namespace, &r.name) {
            Some(parent) => {
                let old = old.map(|o| parent.with_replicas(o.replicas()));
                (parent.with_replicas(scale.replicas()), old, None)
            }
            None => {
                let warning = format!(
                    "headroom: {r} not read for this scale: its annotations, image and strategy \
                     were not checked"
                );
                (scale, old, Some(warning))
            }
        }
    }

    /// An object the API server accepted but we cannot parse: our defect, not the user's.
    /// Allowed with a warning naming the field, in every mode, and counted as a fail-open.
    fn unparseable(
        &self,
        request: &RequestIn<'_>,
        mode: &'static str,
        kind: Kind,
        error: &str,
    ) -> Vec<u8> {
        tracing::warn!(
            uid = %request.uid,
            kind = kind.as_str(),
            namespace = request.namespace.as_deref().unwrap_or_default(),
            name = %request.name,
            error,
            "cannot parse the object; allowed unevaluated (fail-open)"
        );
        self.metrics
            .record_decision(mode, Outcome::FailOpen.as_str(), kind.as_str());
        self.metrics.record_fail_open(FAIL_OPEN_UNPARSEABLE);
        let warnings = [decision::fit_warning(&format!(
            "headroom: not evaluated, cannot parse {error}; allowed"
        ))];
        let audit = BTreeMap::from([(decision::AUDIT_FAIL_OPEN.to_owned(), error.to_owned())]);
        respond(&request.uid, true, None, &warnings, &audit)
    }

    fn decide(
        &self,
        budget: &Budget,
        workload: &Workload,
        old: Option<&Workload>,
        dry_run: bool,
    ) -> Decision {
        let data = self.data();
        let inventory = read(&self.inventory);
        let autoscalers = read(&self.autoscalers);
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let apiserver = self.apiserver.current();
        let ctx = Context {
            budget_name: &budget.name,
            budget: &budget.spec,
            snapshot: data.as_ref().map(|d| &d.snapshot),
            data_age: self.data_age(),
            inventory: &inventory,
            autoscalers: &autoscalers,
            pending: ledger.pending_except(&workload.reference),
            apiserver: apiserver.as_deref(),
            apiserver_age: self.apiserver.age(SystemTime::now()),
        };
        let decision = decision::decide(workload, old, &ctx);
        // A dry run changes no state: nothing is reserved.
        if !dry_run
            && decision.outcome == Outcome::Allowed
            && let (Some(e), Some(data)) = (&decision.evaluation, &data)
        {
            let added =
                e.projection.workload_steady - data.snapshot.current_share(&workload.reference);
            let reservation = Reservation {
                workload: workload.reference.clone(),
                load: added.clamp_non_negative(),
                admitted_at: SystemTime::now(),
            };
            ledger.reserve(reservation.clone());
            if let Some(share) = self.share.get() {
                let _ = share.send(reservation);
            }
        }
        decision
    }
}

fn respond(
    uid: &str,
    allowed: bool,
    status: Option<StatusOut<'_>>,
    warnings: &[String],
    audit_annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    ReviewOut {
        api_version: review::API_VERSION,
        kind: review::KIND,
        response: ResponseOut {
            uid,
            allowed,
            status,
            warnings,
            audit_annotations,
        },
    }
    .to_vec()
}

/// Reads the object of a request; objects may leave their namespace to the request.
pub(crate) fn read_workload(
    kind: Kind,
    scale: bool,
    document: &str,
    json: &str,
    namespace: &str,
) -> Result<Workload, Error> {
    let metadata_of = |m: Option<MetadataIn>| {
        let m = m.unwrap_or_default();
        ObjectMeta {
            name: m.name,
            namespace: m.namespace.or_else(|| Some(namespace.to_owned())),
            annotations: m.annotations,
            owner_references: m.owner_references.map(|owners| {
                owners
                    .into_iter()
                    .map(|o| OwnerReference {
                        api_version: o.api_version,
                        kind: o.kind,
                        name: o.name,
                        controller: o.controller,
                        ..OwnerReference::default()
                    })
                    .collect()
            }),
            ..ObjectMeta::default()
        }
    };
    if scale {
        let object: ScaleIn = parse_json(document, "", json)?;
        let replicas = object.spec.and_then(|s| s.replicas);
        Ok(Workload::from_scale_parts(
            kind,
            metadata_of(object.metadata),
            replicas,
        ))
    } else {
        let object: ObjectIn<'_> = parse_json(document, "", json)?;
        let metadata = metadata_of(object.metadata);
        Workload::from_parts(
            kind,
            document,
            metadata,
            object.spec.map(|s| Spec::Raw(s.get())),
        )
    }
}

pub(crate) const SUPPORTED: &str = "apps/v1 Deployment, StatefulSet, DaemonSet, ReplicaSet, batch/v1 Job, \
                         CronJob, and the scale subresource of deployments, statefulsets, \
                         replicasets";

pub(crate) fn supported_kind(request: &RequestIn<'_>) -> Result<Kind, BadRequest> {
    request_kind(request).map_err(|what| {
        BadRequest(format!(
            "unsupported {what}: headroom evaluates {SUPPORTED}"
        ))
    })
}

/// The workload kind a request is about, or what it is about instead (`kind core/v1 Pod`).
pub(crate) fn request_kind(request: &RequestIn<'_>) -> Result<Kind, String> {
    match request.sub_resource.as_deref() {
        Some("scale") => {
            if request.resource.group != "apps" {
                return Err(format!(
                    "resource {}/{}/scale",
                    request.resource.group, request.resource.resource
                ));
            }
            Kind::from_scalable_resource(&request.resource.resource)
                .ok_or_else(|| format!("resource apps/{}/scale", request.resource.resource))
        }
        Some(other) => Err(format!("subresource {other}")),
        None => {
            let gvk = &request.kind;
            let kind = Kind::from_kind(&gvk.kind);
            let group_ok = match kind {
                Some(Kind::Job | Kind::CronJob) => gvk.group == "batch",
                Some(_) => gvk.group == "apps",
                None => false,
            };
            match kind {
                Some(kind) if group_ok => Ok(kind),
                _ => {
                    let group = if gvk.group.is_empty() {
                        "core"
                    } else {
                        &gvk.group
                    };
                    Err(format!("kind {group}/{} {}", gvk.version, gvk.kind))
                }
            }
        }
    }
}
