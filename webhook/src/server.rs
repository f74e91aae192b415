//! The running webhook: HTTPS admission endpoint, plain-HTTP metrics and probes, and the
//! background refreshers (profiles, budget file, TLS certificate).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State as AxumState},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{
    admission::{BadRequest, Budget, State},
    budget::ControlPlaneBudget,
    cluster,
    error::Error,
    freshness,
    inventory::Inventory,
    reservation,
    sources::Source,
    tls::{self, ReloadingCert},
};

mod body;
mod reload;
use body::BodyError;

/// Largest AdmissionReview body accepted (an object and its old version, each ≤ 1.5 MiB in
/// etcd, plus the review around them).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `serve`'s configuration, parsed from flags.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The budget file; `None` with `cluster`.
    pub budget: Option<PathBuf>,
    /// `Some(budget name)`: watch nodes, HPAs and that ControlPlaneBudget in the cluster.
    pub cluster: Option<String>,
    pub profiles: Option<PathBuf>,
    pub collectors: Vec<String>,
    pub prometheus: Option<String>,
    pub refresh: Duration,
    /// The node inventory (`--nodes N` or the contents of `nodes_file`).
    pub inventory: Inventory,
    /// `--nodes-file`, re-read when it changes.
    pub nodes_file: Option<PathBuf>,
}

impl Config {
    /// The one profile source the flags name.
    pub fn source(&self) -> Result<Option<Source>, Error> {
        let mut sources = Vec::new();
        if let Some(path) = &self.profiles {
            sources.push(Source::File(path.clone()));
        }
        if !self.collectors.is_empty() {
            sources.push(Source::Collectors(self.collectors.clone()));
        }
        if let Some(url) = &self.prometheus {
            sources.push(Source::Prometheus(url.clone()));
        }
        if sources.len() > 1 {
            return Err(Error::Parse {
                path: "flags".to_owned(),
                message: "use one of --profiles, --collector, --prometheus".to_owned(),
            });
        }
        Ok(sources.pop())
    }
}

/// The admission router: `POST /validate` (and `/`) takes an AdmissionReview v1.
pub fn admission_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/", post(validate))
        // The handler reads the body with its own limit (see `body`).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn validate(AxumState(state): AxumState<Arc<State>>, request: Request) -> Response {
    let http2 = request.version() == axum::http::Version::HTTP_2;
    let body = match body::read_limited(request.into_body(), MAX_BODY_BYTES, http2).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let message = format!(
                "request body is over {MAX_BODY_BYTES} bytes: not an AdmissionReview the API \
                 server sends\n"
            );
            return (StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
        }
        Err(BodyError::Read(e)) => {
            tracing::debug!(error = %e, "reading the request body failed");
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            )
                .into_response();
        }
    };
    match state.review(&body) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(BadRequest(message)) => {
            tracing::warn!(%message, "bad admission request");
            (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
        }
    }
}

/// `/metrics`, `/healthz`, `/readyz` on the plain-HTTP port.
pub fn metrics_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    let age = state.data_age().map_or(-1.0, |a| a.as_secs_f64());
    state.metrics.data_age.set(age);
    let coverage = state.data().and_then(|d| {
        let max_age = Duration::from_secs(state.budget().spec.max_data_age_seconds);
        freshness::coverage(&d.snapshot, &state.inventory(), max_age).map(|c| c.ratio())
    });
    state.metrics.coverage.set(coverage.unwrap_or(-1.0));
    let levels = state.apiserver.current().map(|capacity| {
        crate::capacity::status::status(&capacity, &state.budget().spec.limits, SystemTime::now())
    });
    state.metrics.levels.show(levels.as_ref());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Response {
    // Not ready without data or before the watches listed; the webhook still answers
    // (fail-open) if called.
    let problems = state.not_ready_because();
    let notes = state.readiness_notes();
    let lines = |head: &str, lines: &[String]| {
        std::iter::once(head.to_owned())
            .chain(lines.iter().map(|l| format!("  {l}")))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    if problems.is_empty() {
        (StatusCode::OK, lines("ready", &notes)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            lines("not ready:", &problems),
        )
            .into_response()
    }
}

/// Accepts TLS connections forever, serving HTTP/1.1 and HTTP/2 with `router`.
pub async fn serve_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: Router) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = TowerToHyperService::new(router);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Addresses of a started server.
#[derive(Clone, Copy, Debug)]
pub struct Running {
    pub https: SocketAddr,
    pub metrics: SocketAddr,
}

/// The API server's capacity for `apiserverRequestsPerSecond: auto` from Prometheus when
/// it is given (every replica scraped); the kube client's `/metrics` loop ([`cluster::run`],
/// one replica) then stays idle. Without the cluster, the FlowSchemas are kube-apiserver's
/// defaults.
fn spawn_capacity(
    config: &Config,
    client: Option<&kube::Client>,
    state: &Arc<State>,
) -> Result<(), Error> {
    let Some(url) = &config.prometheus else {
        return Ok(());
    };
    state.apiserver.take_levels_from_prometheus();
    if client.is_none() {
        let defaults = crate::check::apiserver::parse_flow_schemas(
            "the default FlowSchemas",
            crate::check::apiserver::DEFAULT_FLOW_SCHEMAS,
        )?;
        state.apiserver.set_flow_schemas(defaults);
    }
    tokio::spawn(crate::sources::apiserver_prometheus::run(
        url.clone(),
        state.clone(),
        config.refresh,
    ));
    Ok(())
}

/// Loads everything, binds both ports and spawns the servers and refreshers. Fails fast on
/// a bad budget, certificate or flag.
pub async fn start(config: Config) -> Result<(Running, Arc<State>), Error> {
    let source = config.source()?;
    let (budget, client) = match (&config.budget, &config.cluster) {
        (Some(path), _) => (ControlPlaneBudget::load(path)?, None),
        (None, Some(name)) => {
            let kube = |e: kube::Error| Error::Kube {
                message: e.to_string(),
            };
            let client = cluster::client().await.map_err(kube)?;
            let budget = cluster::fetch_budget(client.clone(), name)
                .await
                .map_err(kube)?;
            budget
                .spec
                .validate(&format!("ControlPlaneBudget {name}"))?;
            (budget, Some(client))
        }
        (None, None) => {
            return Err(Error::Parse {
                path: "flags".to_owned(),
                message: "use --budget FILE or --kube".to_owned(),
            });
        }
    };
    let cert = Arc::new(ReloadingCert::new(
        config.tls_cert.clone(),
        config.tls_key.clone(),
    )?);
    let tls_config = tls::server_config(cert.clone())?;
    let state = Arc::new(State::new(Budget::from(budget), config.inventory.clone()));

    let https = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let metrics = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.metrics_listen,
            source,
        })?;
    let running = Running {
        https: https.local_addr().map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?,
        metrics: metrics.local_addr().map_err(|source| Error::Listen {
            addr: config.metrics_listen,
            source,
        })?,
    };

    // Profiles: fetched in the background from the start, so a source that hangs never
    // holds up serving; until the first answer /readyz says so and changes fail open.
    match &source {
        Some(source) => {
            let (state, source, every) = (state.clone(), source.clone(), config.refresh);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    refresh_profiles(&state, &source).await;
                }
            });
        }
        None => tracing::warn!("no profile source: every change is allowed (fail-open)"),
    }

    spawn_capacity(&config, client.as_ref(), &state)?;
    if let (Some(client), Some(name)) = (client, config.cluster.clone()) {
        // Reservations shared with the other replicas through the budget's status.
        let (share, admitted) = tokio::sync::mpsc::unbounded_channel();
        state.share_reservations(share);
        tokio::spawn(reservation::shared::run(
            kube::Api::all(client.clone()),
            name.clone(),
            state.clone(),
            admitted,
            config.refresh,
            // The budget watch (cluster::run) reads the others' reservations back.
            false,
        ));
        let health = Arc::new(cluster::health());
        state.set_watches(health.clone());
        state.await_inventory();
        tokio::spawn(cluster::run(
            client,
            state.clone(),
            health,
            name,
            config.refresh,
            collector::watch::BackoffConfig::default(),
        ));
    }
    // Budget file, node inventory file and certificate: reloaded when they change.
    if let Some(path) = config.budget.clone() {
        reload::budget_file(state.clone(), path, config.refresh);
    }
    if let Some(path) = config.nodes_file.clone() {
        reload::nodes_file(state.clone(), path, config.refresh);
    }
    reload::certificate(state.clone(), cert, config.refresh);

    tokio::spawn(serve_tls(
        https,
        tls_config,
        admission_router(state.clone()),
    ));
    let metrics_app = metrics_router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics, metrics_app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(https = %running.https, metrics = %running.metrics, "headroom webhook serving");
    Ok((running, state))
}

async fn refresh_profiles(state: &State, source: &Source) {
    match source.fetch().await {
        Ok(snapshot) => state.set_snapshot(snapshot, SystemTime::now()),
        Err(e) => {
            state.metrics.record_refresh_error(source.label());
            tracing::warn!(error = %e, "profile refresh failed");
        }
    }
}

/// Starts the server and runs until interrupted.
pub async fn run(config: Config) -> Result<(), Error> {
    let _running = start(config).await?;
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("interrupted; stopping");
    Ok(())
}
