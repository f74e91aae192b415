//! The health of a binary's own watches: what each has listed, applied and failed
//! (counted for the metrics), the state it is in (logged once per change, with what the
//! operator should do) and whether readiness can count on it.
use std::{
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use super::failure::{Class, ErrorReason, Failure};

/// A watched resource, as an operator would look it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watched {
    /// The resource's plural name, as the API server's metrics and RBAC spell it.
    pub resource: &'static str,
    /// `v1`, `discovery.k8s.io/v1`, …
    pub api_version: &'static str,
    /// The manifest whose RBAC grants it (`deploy/collector/rbac.yaml`).
    pub rbac: &'static str,
}

impl Watched {
    /// `pods`, `endpointslices.discovery.k8s.io`: the name `kubectl` and RBAC use.
    pub fn qualified(&self) -> String {
        match self.api_version.rsplit_once('/') {
            Some((group, _)) => format!("{}.{group}", self.resource),
            None => self.resource.to_owned(),
        }
    }

    /// What to do about a failure.
    pub fn advice(&self, failure: &Failure) -> String {
        match failure.status {
            Some(401) => "the API server rejected the credentials: check the service account \
                          token or the kubeconfig's user"
                .to_owned(),
            Some(403) => format!(
                "grant list/watch on {}: see {}",
                self.qualified(),
                self.rbac
            ),
            Some(404) => format!(
                "{} {} is not served by this API server (kubectl api-resources)",
                self.api_version, self.resource
            ),
            _ => "retrying with backoff; check that the API server is reachable".to_owned(),
        }
    }
}

/// Where a watch is.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Not running (a fallback not needed, or not started yet).
    Idle,
    /// Started, no complete LIST yet.
    Starting,
    /// Listed, and following changes.
    Listed,
    /// The last request failed; retried after the backoff.
    Failing(Failure),
    /// The API server does not serve the resource; the text says what is used instead.
    NotServed(String),
}

#[derive(Debug)]
struct State {
    phase: Phase,
    listed_once: bool,
    /// Failures since the last LIST or event.
    consecutive: u32,
}

#[derive(Debug)]
struct Entry {
    watched: Watched,
    lists: AtomicU64,
    events: AtomicU64,
    errors: [AtomicU64; ErrorReason::ALL.len()],
    /// Unix time of the last applied event in milliseconds; 0: none yet.
    last_event_ms: AtomicU64,
    state: Mutex<State>,
}

/// A LIST that has failed this many times in a row makes an already listed watch not
/// ready: its cache is that old.
pub const RELIST_FAILURES_NOT_READY: u32 = 3;

/// One watch as the metrics show it (the collector's `WatchHealth`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub resource: &'static str,
    /// Lists started: the first one, then one after each 410 Gone or failed LIST.
    pub lists: u64,
    /// Events applied; a completed list counts as one.
    pub events: u64,
    /// Failures by reason, every reason listed (zeros too, so rates work from the start).
    pub errors: Vec<(&'static str, u64)>,
    /// Unix time of the last event applied; `None` before the first list completed.
    pub last_event_unix_seconds: Option<f64>,
    /// Whether readiness counts this watch as good; `None` while it does not run (an
    /// idle fallback, or a resource not served).
    pub ready: Option<bool>,
    /// Whether the API server serves the resource (as far as discovery said).
    pub served: bool,
}

/// What `/readyz` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Why not ready, one line per watch; empty when ready.
    pub problems: Vec<String>,
    /// Worth knowing while ready (a resource not served and its fallback).
    pub notes: Vec<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The watches' health, shared by the watch tasks, the metrics and the probes.
#[derive(Debug)]
pub struct Health {
    entries: Vec<Entry>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Health {
    /// Every watch the binary may run, each idle until started.
    pub fn new(watched: &[Watched]) -> Self {
        let entries = watched
            .iter()
            .map(|&watched| Entry {
                watched,
                lists: AtomicU64::new(0),
                events: AtomicU64::new(0),
                errors: Default::default(),
                last_event_ms: AtomicU64::new(0),
                state: Mutex::new(State {
                    phase: Phase::Idle,
                    listed_once: false,
                    consecutive: 0,
                }),
            })
            .collect();
        Self { entries }
    }

    /// The entry of `resource`; a name not given to [`Health::new`] is a bug.
    fn entry(&self, resource: &str) -> &Entry {
        self.entries
            .iter()
            .find(|e| e.watched.resource == resource)
            .unwrap_or_else(|| panic!("{resource} is not a watched resource"))
    }

    fn state(&self, resource: &str) -> MutexGuard<'_, State> {
        self.entry(resource)
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn watched(&self, resource: impl AsRef<str>) -> Watched {
        self.entry(resource.as_ref()).watched
    }

    /// (Re)lists started.
    pub fn lists(&self, resource: impl AsRef<str>) -> u64 {
        self.entry(resource.as_ref()).lists.load(Ordering::Relaxed)
    }

    /// Events applied (a completed list counts as one).
    pub fn events(&self, resource: impl AsRef<str>) -> u64 {
        self.entry(resource.as_ref()).events.load(Ordering::Relaxed)
    }

    /// Failed requests or error events, whatever the reason.
    pub fn errors(&self, resource: impl AsRef<str>) -> u64 {
        let entry = self.entry(resource.as_ref());
        entry.errors.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    pub fn errors_for(&self, resource: impl AsRef<str>, reason: ErrorReason) -> u64 {
        self.entry(resource.as_ref()).errors[reason as usize].load(Ordering::Relaxed)
    }

    pub fn phase(&self, resource: impl AsRef<str>) -> Phase {
        self.state(resource.as_ref()).phase.clone()
    }

    /// Whether `resource` has completed a LIST since start.
    pub fn listed_once(&self, resource: impl AsRef<str>) -> bool {
        self.state(resource.as_ref()).listed_once
    }

    /// The last failure of any watch still failing, as `resource: message`.
    pub fn last_error(&self) -> Option<String> {
        self.entries.iter().rev().find_map(|e| {
            let state = e.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &state.phase {
                Phase::Failing(f) => Some(format!("{}: {}", e.watched.resource, f.message)),
                _ => None,
            }
        })
    }

    /// The watch task of `resource` runs (again).
    pub fn started(&self, resource: &str) {
        let mut state = self.state(resource);
        if matches!(state.phase, Phase::Idle | Phase::NotServed(_)) {
            state.phase = Phase::Starting;
        }
    }

    /// The watch of `resource` was stopped on purpose (its fallback took over, or the
    /// other way round).
    pub fn stopped(&self, resource: &str) {
        let mut state = self.state(resource);
        if !matches!(state.phase, Phase::NotServed(_)) {
            state.phase = Phase::Idle;
        }
    }

    pub(super) fn list_started(&self, resource: &str) {
        self.entry(resource).lists.fetch_add(1, Ordering::Relaxed);
    }

    /// A LIST completed.
    pub(super) fn listed(&self, resource: &str) {
        self.progressed(resource);
        self.state(resource).listed_once = true;
    }

    /// An event was applied.
    pub(super) fn progressed(&self, resource: &str) {
        let entry = self.entry(resource);
        entry.events.fetch_add(1, Ordering::Relaxed);
        entry.last_event_ms.store(now_ms(), Ordering::Relaxed);
        let mut state = self.state(resource);
        if let Phase::Failing(failure) = &state.phase {
            tracing::info!(
                resource,
                after_failures = state.consecutive,
                "the {} watch works again (it failed with {})",
                entry.watched.resource,
                failure.status_text()
            );
        }
        state.phase = Phase::Listed;
        state.consecutive = 0;
    }

    /// A request failed; logged when it is news (the first failure, or a different one).
    pub(super) fn failed(&self, resource: &str, failure: Failure) {
        let entry = self.entry(resource);
        entry.errors[failure.reason as usize].fetch_add(1, Ordering::Relaxed);
        if failure.class == Class::Expired {
            tracing::debug!(resource, "resourceVersion expired (410 Gone); relisting");
            return;
        }
        let mut state = self.state(resource);
        state.consecutive += 1;
        let news = match &state.phase {
            Phase::Failing(last) => !last.same_state(&failure),
            _ => true,
        };
        if news {
            log_failure(&entry.watched, &failure);
        } else {
            tracing::debug!(resource, error = %failure.message, "watch still failing");
        }
        state.phase = Phase::Failing(failure);
    }

    /// Discovery says the API server does not serve `resource`; `instead` says what the
    /// binary does without it. Logged once per change.
    pub fn not_served(&self, resource: &str, instead: &str) {
        let watched = self.entry(resource).watched;
        let mut state = self.state(resource);
        if !matches!(state.phase, Phase::NotServed(_)) {
            tracing::warn!(
                resource,
                api_version = watched.api_version,
                "{} {} is not served by this API server: {instead}",
                watched.api_version,
                watched.resource
            );
        }
        state.phase = Phase::NotServed(instead.to_owned());
    }

    /// Whether every watch readiness counts on is good, and why not.
    pub fn readiness(&self) -> Readiness {
        let mut readiness = Readiness::default();
        for entry in &self.entries {
            let state = entry.state.lock().unwrap_or_else(PoisonError::into_inner);
            let watched = &entry.watched;
            let resource = watched.resource;
            match &state.phase {
                Phase::Idle | Phase::Listed => {}
                Phase::NotServed(instead) => readiness.notes.push(format!(
                    "{resource}: {} not served; {instead}",
                    watched.api_version
                )),
                Phase::Starting => readiness
                    .problems
                    .push(format!("{resource}: not listed yet")),
                Phase::Failing(f) => {
                    let why = format!("{} ({})", f.status_text(), watched.advice(f));
                    if !state.listed_once {
                        readiness
                            .problems
                            .push(format!("{resource}: never listed: {why}"));
                    } else if f.class == Class::Refused {
                        readiness.problems.push(format!("{resource}: {why}"));
                    } else if f.reason == ErrorReason::ListFailed
                        && state.consecutive >= RELIST_FAILURES_NOT_READY
                    {
                        readiness.problems.push(format!(
                            "{resource}: relist failed {} times: {why}",
                            state.consecutive
                        ));
                    }
                }
            }
        }
        readiness
    }

    /// Every watch's numbers, for the metrics.
    pub fn reports(&self) -> Vec<Report> {
        let readiness = self.readiness();
        self.entries
            .iter()
            .map(|e| {
                let resource = e.watched.resource;
                let last_ms = e.last_event_ms.load(Ordering::Relaxed);
                let prefix = format!("{resource}: ");
                let phase = e
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .phase
                    .clone();
                Report {
                    resource,
                    lists: e.lists.load(Ordering::Relaxed),
                    events: e.events.load(Ordering::Relaxed),
                    errors: ErrorReason::ALL
                        .iter()
                        .map(|&r| (r.name(), e.errors[r as usize].load(Ordering::Relaxed)))
                        .collect(),
                    last_event_unix_seconds: (last_ms > 0).then(|| last_ms as f64 / 1000.0),
                    ready: (!matches!(phase, Phase::Idle | Phase::NotServed(_)))
                        .then(|| !readiness.problems.iter().any(|p| p.starts_with(&prefix))),
                    served: !matches!(phase, Phase::NotServed(_)),
                }
            })
            .collect()
    }
}

fn log_failure(watched: &Watched, failure: &Failure) {
    let operation = match failure.reason {
        ErrorReason::ListFailed | ErrorReason::NoResourceVersion => "list",
        _ => "watch",
    };
    let resource = watched.resource;
    let status = failure.status.unwrap_or(0);
    let advice = watched.advice(failure);
    let text = failure.status_text();
    match failure.class {
        Class::Refused => tracing::error!(
            resource,
            status,
            error = %failure.detail,
            "cannot {operation} {resource}: {text}; {advice}"
        ),
        _ => tracing::warn!(
            resource,
            status,
            error = %failure.detail,
            "cannot {operation} {resource}: {text}; {advice}"
        ),
    }
}

#[cfg(test)]
mod tests;
