//! The collector's HTTP endpoints: /metrics, /healthz, /readyz, /dns/names.
//!
//! [`router`] builds them; more routes (profiles) merge onto its result with
//! [`axum::Router::merge`] before [`serve`] runs it.
use std::{
    fmt,
    future::Future,
    net::{SocketAddr, TcpListener},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{
    config::format_duration,
    error::{Error, Result},
    metrics::{Metrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE},
    watch::Health,
};

/// Whether the collector is doing its job: the wiring marks the programs attached
/// and beats once per event-loop turn. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<ReadinessInner>);

#[derive(Debug)]
struct ReadinessInner {
    started: Instant,
    attached: AtomicBool,
    /// Nanoseconds from `started` to the last beat, plus one; 0 means never.
    last_beat: AtomicU64,
    timeout: Duration,
    /// The cluster watches, in a cluster.
    watches: OnceLock<Arc<Health>>,
}

/// Why /readyz fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotReady {
    NotAttached,
    LoopNeverRan,
    LoopStale {
        idle: Duration,
        timeout: Duration,
    },
    /// A watch has never listed or keeps failing: one line per watch.
    Watches(Vec<String>),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAttached => write!(f, "the kernel programs are not attached"),
            Self::LoopNeverRan => write!(f, "the event loop has not run yet"),
            Self::LoopStale { idle, timeout } => write!(
                f,
                "the event loop has not run for {} (limit {})",
                format_duration(*idle),
                format_duration(*timeout)
            ),
            Self::Watches(problems) => write!(f, "{}", problems.join("; ")),
        }
    }
}

impl Readiness {
    /// Not ready until attached and beaten; stale after `timeout` without a beat.
    pub fn new(timeout: Duration) -> Self {
        Self(Arc::new(ReadinessInner {
            started: Instant::now(),
            attached: AtomicBool::new(false),
            last_beat: AtomicU64::new(0),
            timeout,
            watches: OnceLock::new(),
        }))
    }

    /// Counts the cluster watches in (set once, in a cluster).
    pub fn set_watches(&self, health: Arc<Health>) {
        let _ = self.0.watches.set(health);
    }

    /// What /readyz should mention while ready (an API not served, its fallback).
    pub fn notes(&self) -> Vec<String> {
        self.0
            .watches
            .get()
            .map(|h| h.readiness().notes)
            .unwrap_or_default()
    }

    pub fn set_attached(&self, attached: bool) {
        self.0.attached.store(attached, Ordering::Relaxed);
    }

    /// The event loop ran.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.0.started).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.0.last_beat.store(stamp, Ordering::Relaxed);
    }

    pub fn status(&self) -> Result<(), NotReady> {
        self.status_at(Instant::now())
    }

    fn status_at(&self, now: Instant) -> Result<(), NotReady> {
        if !self.0.attached.load(Ordering::Relaxed) {
            return Err(NotReady::NotAttached);
        }
        let stamp = self.0.last_beat.load(Ordering::Relaxed);
        if stamp == 0 {
            return Err(NotReady::LoopNeverRan);
        }
        let beat = self.0.started + Duration::from_nanos(stamp - 1);
        let idle = now.saturating_duration_since(beat);
        if idle > self.0.timeout {
            return Err(NotReady::LoopStale {
                idle,
                timeout: self.0.timeout,
            });
        }
        if let Some(health) = self.0.watches.get() {
            let readiness = health.readiness();
            if !readiness.is_ready() {
                return Err(NotReady::Watches(readiness.problems));
            }
        }
        Ok(())
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// How query names leave through /dns/names (`--dns-names`).
    pub dns_names: dns_names::NamePolicy,
}

pub mod dns_names;

/// /metrics, /healthz, /readyz and /dns/names.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/dns/names", get(dns_names))
        .with_state(state)
}

/// The names each workload asked for most, from the last published snapshot.
async fn dns_names(State(state): State<AppState>) -> Response {
    let Some(list) = dns_names::list(&state.metrics.snapshot().current(), &state.dns_names) else {
        return (
            StatusCode::NOT_FOUND,
            "DNS names are off on this collector (--dns-names off); per-workload query counts \
             are in /metrics, and --dns-names hash shows which names dominate without them\n",
        )
            .into_response();
    };
    match serde_json::to_string(&list) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        // Plain strings and numbers serialise; an error would be a bug, not the client's.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// OpenMetrics unless the client asks for the Prometheus text format and not for
/// OpenMetrics (Prometheus itself asks for OpenMetrics first).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let (content_type, body) =
        if accept.contains("text/plain") && !accept.contains("application/openmetrics-text") {
            (
                PROMETHEUS_TEXT_CONTENT_TYPE,
                state.metrics.encode_prometheus_text(),
            )
        } else {
            (OPENMETRICS_CONTENT_TYPE, state.metrics.encode_openmetrics())
        };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.readiness.status() {
        Ok(()) => {
            let notes: String = state
                .readiness
                .notes()
                .iter()
                .map(|n| format!("  {n}\n"))
                .collect();
            (StatusCode::OK, format!("ready\n{notes}"))
        }
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Binds the HTTP port. Done before the kernel programs are loaded, so a taken port
/// fails start-up at once and with the flag to change.
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            Error::PortInUse { addr }
        } else {
            Error::Listen { addr, source }
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Listen { addr, source })?;
    Ok(listener)
}

/// Serves `app` on `listener` (from [`bind`]) until `shutdown` completes, then lets
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let listen_error = |source| Error::Listen { addr, source };
    listener.set_nonblocking(true).map_err(listen_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_error)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(listen_error)
}

#[cfg(test)]
mod tests;
