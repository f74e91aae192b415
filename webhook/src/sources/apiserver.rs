//! The API server's capacity for `apiserverRequestsPerSecond: auto` in `--kube` mode: its
//! `/metrics`, read through the kube client in the background (RBAC `nonResourceURLs:
//! ["/metrics"]`, verb `get`), two consecutive scrapes making the window of the model;
//! and the FlowSchemas, from the watch in [`crate::cluster`]. Behind a load balancer
//! `/metrics` is one replica's: the status says so.
//!
//! The admission path reads [`CapacityStore::current`] only; a source that hangs or fails
//! backs off, is logged once per change of state and counted in
//! `profile_refresh_errors_total{source="apiserver"}`, and the figures age towards stale.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::capacity::{self, ApiserverCapacity, FlowSchema, LevelCapacity, Scrape};

/// What the status says the figures are when they come through the kube client.
pub const ONE_REPLICA: &str = "one API server replica (/metrics through the kube client)";
/// The `source` label of the refresh-error metric.
pub const SOURCE_LABEL: &str = "apiserver";
/// Shortest window between two scrapes: a real API server's /metrics is megabytes, and a
/// shorter window is mostly noise.
pub const MIN_SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait between failing scrapes.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The figures of every level and the FlowSchemas, combined once both are in hand.
#[derive(Debug, Default)]
pub struct CapacityStore {
    parts: RwLock<Parts>,
    /// The levels come from Prometheus: `/metrics` through the kube client is not read.
    from_prometheus: AtomicBool,
}

#[derive(Debug, Default)]
struct Parts {
    levels: Option<(BTreeMap<String, LevelCapacity>, SystemTime, String)>,
    flow_schemas: Option<Vec<FlowSchema>>,
    combined: Option<Arc<ApiserverCapacity>>,
}

impl Parts {
    fn combine(&mut self) {
        self.combined = match (&self.levels, &self.flow_schemas) {
            (Some((levels, observed_at, source)), Some(flow_schemas)) => {
                Some(Arc::new(ApiserverCapacity {
                    levels: levels.clone(),
                    flow_schemas: flow_schemas.clone(),
                    observed_at: *observed_at,
                    source: source.clone(),
                }))
            }
            _ => None,
        };
    }
}

impl CapacityStore {
    pub fn set_levels(
        &self,
        levels: BTreeMap<String, LevelCapacity>,
        observed_at: SystemTime,
        source: &str,
    ) {
        let mut parts = self.parts.write().unwrap_or_else(|e| e.into_inner());
        parts.levels = Some((levels, observed_at, source.to_owned()));
        parts.combine();
    }

    pub fn set_flow_schemas(&self, flow_schemas: Vec<FlowSchema>) {
        let mut parts = self.parts.write().unwrap_or_else(|e| e.into_inner());
        parts.flow_schemas = Some(flow_schemas);
        parts.combine();
    }

    /// Both parts, once both have arrived.
    pub fn current(&self) -> Option<Arc<ApiserverCapacity>> {
        self.parts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .combined
            .clone()
    }

    /// The age of the newest figures at `now`.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        let parts = self.parts.read().unwrap_or_else(|e| e.into_inner());
        let (_, at, _) = parts.levels.as_ref()?;
        Some(now.duration_since(*at).unwrap_or_default())
    }

    /// Takes the levels from Prometheus (every replica) rather than `/metrics` through the
    /// kube client (one replica): [`run`] stays idle.
    pub fn take_levels_from_prometheus(&self) {
        self.from_prometheus.store(true, Ordering::Relaxed);
    }

    pub fn levels_from_prometheus(&self) -> bool {
        self.from_prometheus.load(Ordering::Relaxed)
    }

    /// Whether the scrape side has figures (the watch side reports through its health).
    pub fn has_levels(&self) -> bool {
        self.parts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .levels
            .is_some()
    }
}

/// One GET of the API server's `/metrics` through `client`, parsed at the time it
/// answered.
pub async fn scrape(client: &kube::Client, timeout: Duration) -> Result<Scrape, String> {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = tokio::time::timeout(timeout, client.request_text(request))
        .await
        .map_err(|_| format!("GET /metrics took over {}s", timeout.as_secs()))?
        .map_err(|e| match &e {
            kube::Error::Api(status) if status.code == 403 => format!(
                "GET /metrics: forbidden: the webhook's ClusterRole needs nonResourceURLs \
                 [\"/metrics\"] with verb get (see {})",
                crate::cluster::RBAC
            ),
            _ => format!("GET /metrics: {e}"),
        })?;
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    capacity::apf::parse(&text, at).map_err(|e| e.to_string())
}

/// While the budget in force has `auto` request limits, scrapes `/metrics` every `every`
/// (at least [`MIN_SCRAPE_INTERVAL`]; backing off to [`MAX_BACKOFF`] while it fails) and
/// publishes each window's figures to `state`. Runs until the process ends.
pub async fn run(client: kube::Client, state: Arc<crate::admission::State>, every: Duration) {
    let every = every.max(MIN_SCRAPE_INTERVAL);
    let mut previous: Option<Scrape> = None;
    let mut delay = every;
    // The error being logged while failing, so that each change of state logs once.
    let mut failing: Option<String> = None;
    loop {
        // Only a budget with `auto` needs the figures: no megabytes of /metrics otherwise,
        // nor when Prometheus provides them.
        if !state.budget().spec.limits.requests_auto() || state.apiserver.levels_from_prometheus() {
            previous = None;
            tokio::time::sleep(every).await;
            continue;
        }
        match scrape(&client, crate::sources::FETCH_TIMEOUT).await {
            Ok(now) => {
                if failing.take().is_some() {
                    tracing::info!("reading the API server's /metrics works again");
                }
                if let Some(before) = previous.as_ref().filter(|b| b.at < now.at) {
                    let levels =
                        capacity::capacity(before, &now, capacity::DEFAULT_TARGET_UTILIZATION);
                    let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(now.at);
                    state.apiserver.set_levels(levels, at, ONE_REPLICA);
                }
                previous = Some(now);
                delay = every;
            }
            Err(error) => {
                state.metrics.record_refresh_error(SOURCE_LABEL);
                if failing.as_deref() != Some(error.as_str()) {
                    tracing::warn!(%error, "reading the API server's capacity failed; `auto` \
                                            request limits fail open until it works, retrying \
                                            with backoff");
                }
                failing = Some(error);
                // A window across a failure is still a window: keep the last good scrape.
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_combines_levels_and_schemas_once_both_arrived() {
        let store = CapacityStore::default();
        assert!(store.current().is_none());
        store.set_levels(BTreeMap::new(), SystemTime::UNIX_EPOCH, ONE_REPLICA);
        assert!(store.current().is_none(), "no FlowSchemas yet");
        store.set_flow_schemas(Vec::new());
        let combined = store.current().expect("both parts");
        assert_eq!(combined.source, ONE_REPLICA);
        assert_eq!(
            store.age(SystemTime::UNIX_EPOCH + Duration::from_secs(7)),
            Some(Duration::from_secs(7))
        );
    }
}
