//! A local API server that replays recorded objects (tests/fixtures/cluster) and counts
//! every request and connection, for the collector's watches. Plain HTTP on 127.0.0.1
//! (a kube client reaches it through a `kube::Config` with that URL), or HTTPS with a
//! test CA ([`Options::tls`]) for a real collector process given a kubeconfig.
//!
//! Per resource it serves a list (the last scripted one repeats), then for each watch
//! request the next scripted reply (events then held open, or an error status) and any
//! events pushed live. A watch ends after its `timeoutSeconds`, or sooner with
//! [`Options::watch_timeout`] (the API server's own limit), as the real one does. It can
//! go down (connection refused) and come back on the same port. It answers discovery of
//! `discovery.k8s.io/v1` (or 404s it and the EndpointSlices, as a 1.20 server does, with
//! [`ApiServer::stop_serving_slices`]), and can refuse the LISTs of a resource
//! ([`ApiServer::refuse_lists`]). Request times are tokio's, so a test on the paused
//! clock counts requests over simulated time.
#![allow(dead_code, reason = "each test binary uses part of the harness")]

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::broadcast,
    task::JoinSet,
    time::Instant,
};

pub const PODS: &str = "/api/v1/pods";
pub const ENDPOINT_SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
pub const SERVICES: &str = "/api/v1/namespaces/kube-system/services";
pub const ENDPOINTS: &str = "/api/v1/namespaces/default/endpoints";
/// Discovery of the EndpointSlices' group/version.
pub const DISCOVERY: &str = "/apis/discovery.k8s.io/v1";

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/cluster/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The TCP connection it came on, numbered from 1 in accept order.
    pub connection: u64,
    pub path: String,
    pub query: HashMap<String, String>,
    pub watch: bool,
    pub at: Instant,
    pub user_agent: Option<String>,
}

/// What a watch request gets.
#[derive(Clone, Debug)]
pub enum WatchReply {
    /// These events (`{"type": …, "object": …}`), then live ones, held open.
    Events(Vec<Value>),
    /// An HTTP error with a Status body.
    Status(u16, &'static str),
}

#[derive(Debug)]
struct Resource {
    /// Every LIST answered with this error status.
    refused: Option<(u16, &'static str)>,
    lists: VecDeque<Value>,
    watches: VecDeque<WatchReply>,
    live: broadcast::Sender<Value>,
}

#[derive(Debug, Default)]
struct State {
    resources: HashMap<&'static str, Resource>,
    seen: Vec<Seen>,
    watch_timeout: Option<Duration>,
    /// `discovery.k8s.io/v1` is not served (discovery and the slices 404).
    no_slices: bool,
}

/// How the server is reached and how long it holds a watch.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Serve HTTPS (HTTP/1.1) with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// End every watch after this long (or its `timeoutSeconds`, if shorter).
    pub watch_timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// TCP connections accepted (TLS or not), over every restart.
    accepted: Arc<AtomicU64>,
    /// The accept loop and every connection; dropping them is an outage.
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl ApiServer {
    /// Serves an empty list of each resource until told otherwise.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// [`ApiServer::start`] with TLS or a watch limit.
    pub async fn start_with(options: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut state = State {
            watch_timeout: options.watch_timeout,
            ..State::default()
        };
        for (path, kind) in [
            (PODS, "PodList"),
            (ENDPOINT_SLICES, "EndpointSliceList"),
            (SERVICES, "ServiceList"),
            (ENDPOINTS, "EndpointsList"),
        ] {
            let api_version = if path == ENDPOINT_SLICES {
                "discovery.k8s.io/v1"
            } else {
                "v1"
            };
            state.resources.insert(
                path,
                Resource {
                    refused: None,
                    lists: VecDeque::from([json!({
                        "kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": "1"}, "items": []
                    })]),
                    watches: VecDeque::new(),
                    live: broadcast::channel(64).0,
                },
            );
        }
        let server = Self {
            addr,
            state: Arc::new(Mutex::new(state)),
            tls: options.tls,
            accepted: Arc::new(AtomicU64::new(0)),
            tasks: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A kubeconfig for this server whose CA (PEM) is at `ca`, with a bearer token.
    pub fn kubeconfig(&self, ca: &Path) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: collector\n  user:\n    token: recorded-test-token\n\
             contexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: collector\n\
             current-context: recorded\n",
            self.url(),
            ca.display()
        )
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Requests answered so far (every list and watch, errors included).
    pub fn requests(&self) -> usize {
        self.state().seen.len()
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("a URL"));
        kube::Client::try_from(config).expect("a client")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists of `path` served in turn; the last one repeats.
    pub fn set_lists(&self, path: &str, lists: Vec<Value>) {
        let mut state = self.state();
        let resource = state.resources.get_mut(path).expect("a known resource");
        resource.lists = lists.into();
    }

    /// Replies to the next watch requests of `path`, in order; then events held open.
    pub fn script_watches(&self, path: &str, replies: Vec<WatchReply>) {
        let mut state = self.state();
        let resource = state.resources.get_mut(path).expect("a known resource");
        resource.watches.extend(replies);
    }

    /// Every LIST of `path` from now on is answered `code` (`reason`).
    pub fn refuse_lists(&self, path: &str, code: u16, reason: &'static str) {
        let mut state = self.state();
        let resource = state.resources.get_mut(path).expect("a known resource");
        resource.refused = Some((code, reason));
    }

    /// Serves as a 1.20 API server does: no `discovery.k8s.io/v1`.
    pub fn stop_serving_slices(&self) {
        self.state().no_slices = true;
    }

    /// Requests to `path` (lists and watches) so far, and when.
    pub fn times_of(&self, path: &str, watch: bool) -> Vec<Instant> {
        self.seen()
            .iter()
            .filter(|s| s.path == path && s.watch == watch)
            .map(|s| s.at)
            .collect()
    }

    /// Changes [`Options::watch_timeout`] for the watches that start from now on.
    pub fn set_watch_timeout(&self, limit: Option<Duration>) {
        self.state().watch_timeout = limit;
    }

    /// Sends an event to every open watch of `path`.
    pub fn push(&self, path: &str, event: Value) {
        let state = self.state();
        let resource = state.resources.get(path).expect("a known resource");
        let _ = resource.live.send(event);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    pub fn lists_of(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path == path && !s.watch)
            .count()
    }

    pub fn watches_of(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path == path && s.watch)
            .count()
    }

    /// The API server goes away: open connections are cut and new ones refused.
    pub fn stop(&self) {
        if let Some(mut tasks) = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            tasks.abort_all();
        }
    }

    /// Back on the same port.
    pub async fn restart(&self) {
        self.stop();
        // The port was ours a moment ago; retry briefly while the kernel lets go of it.
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot bind {} again", self.addr);
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let (tls, accepted) = (self.tls.clone(), self.accepted.clone());
        let mut tasks = JoinSet::new();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            // Keep the connection tasks owned by the accept task, so aborting it ends them.
            let _held = held;
            while let Ok((stream, _)) = listener.accept().await {
                let connection = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let (state, tls) = (state.clone(), tls.clone());
                connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .spawn(async move {
                        match tls {
                            Some(tls) => {
                                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    serve_connection(stream, state, connection).await;
                                }
                            }
                            None => serve_connection(stream, state, connection).await,
                        }
                    });
            }
        });
        *self.tasks.lock().unwrap_or_else(PoisonError::into_inner) = Some(tasks);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_connection<S>(stream: S, state: Arc<Mutex<State>>, connection: u64)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, connection, &req)) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

type Body = BoxBody<Bytes, Infallible>;

fn handle(
    state: &Mutex<State>,
    connection: u64,
    req: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let asked = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs);
    let limit = match (asked, state.watch_timeout) {
        (Some(a), Some(w)) => Some(a.min(w)),
        (a, w) => a.or(w),
    };
    state.seen.push(Seen {
        connection,
        path: path.clone(),
        query,
        watch,
        at: Instant::now(),
        user_agent: req
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let no_slices = state.no_slices;
    if path == DISCOVERY && !no_slices {
        return json_response(200, &slices_discovery());
    }
    let Some(resource) = state
        .resources
        .get_mut(path.as_str())
        .filter(|_| !(no_slices && path == ENDPOINT_SLICES))
    else {
        return status(404, "NotFound");
    };
    if let (false, Some((code, reason))) = (watch, resource.refused) {
        return status(code, reason);
    }
    if !watch {
        let list = if resource.lists.len() > 1 {
            resource.lists.pop_front()
        } else {
            resource.lists.front().cloned()
        };
        return json_response(200, &list.unwrap_or(Value::Null));
    }
    match resource
        .watches
        .pop_front()
        .unwrap_or(WatchReply::Events(Vec::new()))
    {
        WatchReply::Status(code, reason) => status(code, reason),
        WatchReply::Events(events) => {
            let live = resource.live.subscribe();
            let first = futures::stream::iter(events.into_iter().map(line));
            let rest = futures::stream::unfold(live, |mut live| async move {
                loop {
                    match live.recv().await {
                        Ok(event) => return Some((line(event), live)),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        // Held open until the server stops.
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            });
            let events = futures::StreamExt::chain(first, rest);
            // Past its limit the watch ends as the API server ends one: the chunked body
            // completes and the connection stays open for the next request.
            let end = async move {
                match limit {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            let body = StreamBody::new(futures::StreamExt::take_until(events, Box::pin(end)));
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(body.boxed())
                .expect("a response")
        }
    }
}

fn line(event: Value) -> Result<Frame<Bytes>, Infallible> {
    let mut text = event.to_string();
    text.push('\n');
    Ok(Frame::data(Bytes::from(text)))
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("a response")
}

/// The APIResourceList of `discovery.k8s.io/v1`, as a 1.21+ API server serves it.
fn slices_discovery() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "discovery.k8s.io/v1",
        "resources": [{"name": "endpointslices", "singularName": "", "namespaced": true,
                       "kind": "EndpointSlice", "verbs": ["create", "delete", "deletecollection",
                       "get", "list", "patch", "update", "watch"], "shortNames": []}]
    })
}

/// A `metav1.Status` as the API server sends with an error.
pub fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn status(code: u16, reason: &str) -> Response<Body> {
    json_response(
        code,
        &status_object(code, reason, &format!("{reason} (recorded)")),
    )
}

/// A watch event line's object.
pub fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// The ERROR event a watch gets when its resourceVersion fell out of etcd's window.
pub fn expired(rv_asked: u64, rv_now: u64) -> Value {
    event(
        "ERROR",
        status_object(
            410,
            "Expired",
            &format!("too old resource version: {rv_asked} ({rv_now})"),
        ),
    )
}

/// Percent-decoding of a query value (`spec.nodeName%3Dnode-a`).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits (bounded, in wall-clock time) until `check` holds.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
