//! The health of the collector's own watches: what each has listed, applied and failed,
//! counted as it happens and read by the self-metrics at scrape time.
use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use kube::runtime::watcher;

use crate::metrics::{WatchHealth, WatchHealthSource};

/// What the collector watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Pods = 0,
    EndpointSlices = 1,
    DnsService = 2,
}

impl Resource {
    pub const ALL: [Self; 3] = [Self::Pods, Self::EndpointSlices, Self::DnsService];

    /// The Kubernetes resource name, as the API server's own metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::EndpointSlices => "endpointslices",
            Self::DnsService => "services",
        }
    }
}

/// Why a watch failed; each failure is followed by a retry after the backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    /// A list request failed (unreachable, refused, 5xx, forbidden).
    ListFailed = 0,
    /// A watch request failed to start.
    WatchFailed = 1,
    /// An open watch stream broke (connection cut, bad frame).
    StreamFailed = 2,
    /// 410 Gone: the resourceVersion left the API server's window; the next step is a
    /// relist (of this node's pods only).
    Expired = 3,
    /// Another ERROR event on an open watch.
    ErrorEvent = 4,
    /// A list or event without a resourceVersion.
    NoResourceVersion = 5,
}

impl ErrorReason {
    pub const ALL: [Self; 6] = [
        Self::ListFailed,
        Self::WatchFailed,
        Self::StreamFailed,
        Self::Expired,
        Self::ErrorEvent,
        Self::NoResourceVersion,
    ];

    pub fn of(error: &watcher::Error) -> Self {
        match error {
            watcher::Error::InitialListFailed(_) => Self::ListFailed,
            watcher::Error::WatchStartFailed(_) => Self::WatchFailed,
            watcher::Error::WatchFailed(_) => Self::StreamFailed,
            watcher::Error::WatchError(status) if status.code == 410 => Self::Expired,
            watcher::Error::WatchError(_) => Self::ErrorEvent,
            watcher::Error::NoResourceVersion => Self::NoResourceVersion,
        }
    }

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::ListFailed => "list_failed",
            Self::WatchFailed => "watch_failed",
            Self::StreamFailed => "stream_failed",
            Self::Expired => "expired",
            Self::ErrorEvent => "error_event",
            Self::NoResourceVersion => "no_resource_version",
        }
    }
}

const RESOURCES: usize = Resource::ALL.len();
const REASONS: usize = ErrorReason::ALL.len();

/// The watches' health, for self-metrics and tests.
#[derive(Debug, Default)]
pub struct Health {
    lists: [AtomicU64; RESOURCES],
    events: [AtomicU64; RESOURCES],
    errors: [[AtomicU64; REASONS]; RESOURCES],
    /// Unix time of the last applied event in milliseconds; 0: none yet.
    last_event_ms: [AtomicU64; RESOURCES],
    last_error: Mutex<Option<String>>,
}

impl Health {
    /// (Re)lists started.
    pub fn lists(&self, r: Resource) -> u64 {
        self.lists[r as usize].load(Ordering::Relaxed)
    }

    /// Events applied (a completed list counts as one).
    pub fn events(&self, r: Resource) -> u64 {
        self.events[r as usize].load(Ordering::Relaxed)
    }

    /// Failed requests or error events, whatever the reason.
    pub fn errors(&self, r: Resource) -> u64 {
        ErrorReason::ALL
            .iter()
            .map(|&reason| self.errors_for(r, reason))
            .sum()
    }

    pub fn errors_for(&self, r: Resource, reason: ErrorReason) -> u64 {
        self.errors[r as usize][reason as usize].load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn record_list(&self, r: Resource) {
        self.lists[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record_event(&self, r: Resource) {
        self.events[r as usize].fetch_add(1, Ordering::Relaxed);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_event_ms[r as usize].store(now_ms, Ordering::Relaxed);
    }

    pub(super) fn record_error(&self, r: Resource, error: &watcher::Error) {
        self.errors[r as usize][ErrorReason::of(error) as usize].fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(format!("{r:?}: {error}"));
    }
}

impl WatchHealthSource for Health {
    fn watch_health(&self) -> Vec<WatchHealth> {
        Resource::ALL
            .iter()
            .map(|&r| {
                let last_ms = self.last_event_ms[r as usize].load(Ordering::Relaxed);
                WatchHealth {
                    resource: r.name(),
                    lists: self.lists(r),
                    events: self.events(r),
                    errors: ErrorReason::ALL
                        .iter()
                        .map(|&reason| (reason.name(), self.errors_for(r, reason)))
                        .collect(),
                    last_event_unix_seconds: (last_ms > 0).then(|| last_ms as f64 / 1000.0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn gone() -> watcher::Error {
        let mut status = Status::failure("too old resource version: 1 (2)", "Expired");
        status.code = 410;
        watcher::Error::WatchError(Box::new(status))
    }

    #[test]
    fn errors_are_counted_by_reason_and_resource() {
        let health = Health::default();
        health.record_error(Resource::Pods, &gone());
        health.record_error(Resource::Pods, &watcher::Error::NoResourceVersion);
        health.record_error(Resource::DnsService, &gone());
        assert_eq!(health.errors(Resource::Pods), 2);
        assert_eq!(health.errors_for(Resource::Pods, ErrorReason::Expired), 1);
        assert_eq!(
            health.errors_for(Resource::Pods, ErrorReason::NoResourceVersion),
            1
        );
        assert_eq!(health.errors(Resource::EndpointSlices), 0);
        assert_eq!(health.errors(Resource::DnsService), 1);
        assert!(
            health
                .last_error()
                .is_some_and(|e| e.starts_with("DnsService: ")),
            "{:?}",
            health.last_error()
        );
    }

    #[test]
    fn every_resource_and_reason_is_reported_from_the_start() {
        let health = Health::default();
        health.record_list(Resource::Pods);
        health.record_event(Resource::Pods);
        let report = health.watch_health();
        assert_eq!(
            report.iter().map(|w| w.resource).collect::<Vec<_>>(),
            ["pods", "endpointslices", "services"]
        );
        for watch in &report {
            assert_eq!(watch.errors.len(), ErrorReason::ALL.len());
            assert!(watch.errors.iter().all(|&(_, n)| n == 0));
        }
        assert_eq!((report[0].lists, report[0].events), (1, 1));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let last = report[0].last_event_unix_seconds.expect("an event");
        assert!((now - last).abs() < 60.0, "{last} vs {now}");
        assert_eq!(report[1].last_event_unix_seconds, None);
    }
}
