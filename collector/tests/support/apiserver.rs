//! A loopback stand-in for the Kubernetes API server, and the ground truth for Headroom's
//! API server measurements.
//!
//! rustls (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`) over a hyper 1 server (HTTP/1.1 and
//! HTTP/2) that answers enough of the Kubernetes API for kubectl: `/version`, `/api`,
//! `/apis`, `/api/v1` and `/api/v1/namespaces/default/pods` (a PodList, or a Table when
//! kubectl asks for one, and `?watch=…` streams a watch event every
//! [`ServerConfig::watch_interval`] until the client goes away or `timeoutSeconds` ends it).
//!
//! Ground truth: requests served (per protocol and per connection), TLS connections
//! accepted, and the raw TCP bytes read and written *below* TLS. The same tap records, per
//! connection, every read and write with the TLS record headers that start in it — the
//! shape the kernel's `event::Segment` reports — so the request estimator can be checked
//! against real clients ([`ApiServer::fixture`], [`ApiServer::events`]).
//!
//! A read or write stands for a TCP segment: on loopback a write of ≤ 64 KiB usually leaves
//! as one (GSO) segment. Server reads may coalesce several client segments; the estimator
//! has to be robust to that anyway.
#![allow(
    dead_code,
    reason = "included by several test crates, each using a different part"
)]

use std::{
    convert::Infallible,
    fmt::Write as _,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    pin::Pin,
    process::Command,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use collector_ebpf::event;
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    Request, Response, StatusCode, Version,
    body::{Body, Frame, Incoming},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads, so tap times and
/// kernel event times can be compared.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// How the test server behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Pods in the default namespace's PodList (drives the LIST response size).
    pub pods: usize,
    /// Time between two watch events on an open watch.
    pub watch_interval: Duration,
    /// Offer TLS 1.2 only (the default offers 1.3 and 1.2, clients pick 1.3).
    pub tls12_only: bool,
    /// The loopback address to listen on: 127.0.0.1 (the default) or ::1; the
    /// certificate covers both.
    pub bind: IpAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            pods: 3,
            watch_interval: Duration::from_millis(200),
            tls12_only: false,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// The HTTP version a request was served with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// A TLS record header the tap saw start in a read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapRecord {
    pub content_type: u8,
    pub length: u16,
}

/// One read (client → server, [`event::EGRESS`] from the client's side) or write
/// (server → client, [`event::INGRESS`]) on the TCP stream under TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapChunk {
    pub direction: u32,
    pub ts_ns: u64,
    pub len: u32,
    /// Record headers that start in this chunk, in order.
    pub records: Vec<TapRecord>,
}

/// A request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRequest {
    pub ts_ns: u64,
    pub protocol: Protocol,
    pub path: String,
    pub watch: bool,
}

/// A watch response stream: open from `start_ns` until `end_ns` (None: still open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchSpan {
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

/// Everything the server saw on one TCP connection.
#[derive(Clone, Debug)]
pub struct ConnectionLog {
    pub id: u64,
    pub peer: SocketAddr,
    pub opened_ns: u64,
    pub closed_ns: Option<u64>,
    pub alpn: Option<String>,
    pub tls_version: Option<String>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub chunks: Vec<TapChunk>,
    pub requests: Vec<ServedRequest>,
    pub watches: Vec<WatchSpan>,
}

/// Finds TLS record headers in one direction of a byte stream, across chunk boundaries.
#[derive(Debug, Default)]
struct RecordParser {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current record still to pass.
    skip: usize,
    /// The chunk the pending header started in.
    header_chunk: usize,
}

impl RecordParser {
    fn feed(&mut self, data: &[u8], chunk: usize, chunks: &mut [TapChunk]) {
        let mut at = 0;
        while at < data.len() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() - at);
                self.skip -= n;
                at += n;
                continue;
            }
            if self.have == 0 {
                self.header_chunk = chunk;
            }
            self.header[self.have] = data[at];
            self.have += 1;
            at += 1;
            if self.have == self.header.len() {
                let length = u16::from_be_bytes([self.header[3], self.header[4]]);
                chunks[self.header_chunk].records.push(TapRecord {
                    content_type: self.header[0],
                    length,
                });
                self.skip = usize::from(length);
                self.have = 0;
            }
        }
    }
}

#[derive(Debug)]
struct ConnState {
    log: ConnectionLog,
    /// Index 0 client → server, 1 server → client.
    parsers: [RecordParser; 2],
}

#[derive(Debug)]
struct Connection {
    state: Mutex<ConnState>,
}

impl Connection {
    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe(&self, shared: &Shared, direction: u32, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        let mut state = self.lock();
        let ConnState { log, parsers } = &mut *state;
        if direction == event::EGRESS {
            log.bytes_read += len;
            shared.bytes_read.fetch_add(len, Ordering::Relaxed);
        } else {
            log.bytes_written += len;
            shared.bytes_written.fetch_add(len, Ordering::Relaxed);
        }
        log.chunks.push(TapChunk {
            direction,
            ts_ns: monotonic_ns(),
            len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            records: Vec::new(),
        });
        let chunk = log.chunks.len() - 1;
        parsers[usize::from(direction != event::EGRESS)].feed(data, chunk, &mut log.chunks);
    }
}

#[derive(Debug, Default)]
struct Shared {
    connections: Mutex<Vec<Arc<Connection>>>,
    accepted: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    http1_requests: AtomicU64,
    http2_requests: AtomicU64,
    open_watches: AtomicU64,
}

/// Counts and records the bytes of a TCP stream below TLS.
struct Tap<S> {
    inner: S,
    conn: Arc<Connection>,
    shared: Arc<Shared>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.conn
            .observe(&this.shared, event::EGRESS, &buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.conn.observe(&this.shared, event::INGRESS, &buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        // One writev is one chunk: gather exactly the bytes it wrote.
        let mut written = Vec::with_capacity(n);
        for buf in bufs {
            let take = buf.len().min(n - written.len());
            written.extend_from_slice(&buf[..take]);
            if written.len() == n {
                break;
            }
        }
        this.conn.observe(&this.shared, event::INGRESS, &written);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Test-wide unique scratch directories (no tempfile crate in this workspace).
fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "headroom-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// The running server. Dropping it stops it and removes its files.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    dir: PathBuf,
    ca_pem: String,
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
}

impl ApiServer {
    /// Starts the server on [`ServerConfig::bind`] (a free port) on its own runtime, so
    /// sync and async tests can both use it.
    pub fn start(config: ServerConfig) -> Self {
        let dir = scratch_dir("apiserver");
        let (ca_pem, tls) = make_tls(config.tls12_only);
        std::fs::write(dir.join("ca.crt"), &ca_pem).expect("write CA certificate");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-apiserver")
            .enable_all()
            .build()
            .expect("build the test API server's runtime");
        let listener = runtime
            .block_on(TcpListener::bind((config.bind, 0)))
            .unwrap_or_else(|e| panic!("bind {}: {e}", SocketAddr::new(config.bind, 0)));
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared::default());
        let config = Arc::new(config);
        runtime.spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            shared.clone(),
            config,
        ));
        let server = Self {
            addr,
            dir,
            ca_pem,
            shared,
            runtime: Some(runtime),
        };
        std::fs::write(server.kubeconfig_path(), server.kubeconfig()).expect("write kubeconfig");
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (or `https://[::1]:PORT`) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA that signed the server certificate (PEM), for `curl --cacert`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A kubeconfig with this server as the cluster, the CA, and a bearer token.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: headroom\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: tester\n  user:\n    token: headroom-test-token\n\
             contexts:\n- name: headroom\n  context:\n    cluster: headroom\n    user: tester\n    \
             namespace: default\ncurrent-context: headroom\n",
            self.url(""),
            self.ca_path().display()
        )
    }

    /// `kubectl` with this server's kubeconfig and a discovery cache of its own (never
    /// the caller's `~/.kube`). Add the verb and arguments.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .env("HOME", &self.dir);
        cmd
    }

    /// `curl -sS --cacert CA`, output discarded. Add the protocol flags and URLs.
    pub fn curl(&self) -> Command {
        let mut cmd = Command::new("curl");
        cmd.arg("-sS")
            .arg("--fail")
            .arg("--cacert")
            .arg(self.ca_path())
            .arg("-o")
            .arg("/dev/null");
        cmd
    }

    /// Requests served over HTTP/1.1 and HTTP/2.
    pub fn requests(&self, protocol: Protocol) -> u64 {
        match protocol {
            Protocol::Http1 => self.shared.http1_requests.load(Ordering::SeqCst),
            Protocol::Http2 => self.shared.http2_requests.load(Ordering::SeqCst),
        }
    }

    pub fn requests_total(&self) -> u64 {
        self.requests(Protocol::Http1) + self.requests(Protocol::Http2)
    }

    /// TCP connections accepted (each one starts a TLS handshake).
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Raw TCP payload bytes the server read (client → server).
    pub fn bytes_read(&self) -> u64 {
        self.shared.bytes_read.load(Ordering::SeqCst)
    }

    /// Raw TCP payload bytes the server wrote (server → client).
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::SeqCst)
    }

    /// Watch responses streaming right now.
    pub fn open_watches(&self) -> u64 {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// A copy of every connection's log, in accept order.
    pub fn connections(&self) -> Vec<ConnectionLog> {
        let conns = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        conns.iter().map(|c| c.lock().log.clone()).collect()
    }

    /// Forgets the connections logged so far (counters keep counting), so one server can
    /// serve several patterns in a row.
    pub fn clear_logs(&self) {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Blocks until `cond` holds or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The logged connections in the fixture text format the estimator's unit tests read
    /// (`collector/src/apiserver/fixtures/README.md`).
    pub fn fixture(&self, pattern: &str, command: &str) -> String {
        render_fixture(pattern, command, &self.connections())
    }

    /// Runs `n` GETs of `path` over one HTTP/2 connection (hyper client, ALPN h2), at
    /// most `concurrency` in flight at once. Returns the status codes.
    pub fn rust_h2_client(&self, path: &str, n: usize, concurrency: usize) -> Vec<u16> {
        rust_h2_client(self.addr, &self.ca_pem, path, n, concurrency)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The text fixture format: see `collector/src/apiserver/fixtures/README.md`.
pub fn render_fixture(pattern: &str, command: &str, conns: &[ConnectionLog]) -> String {
    let origin = conns.iter().map(|c| c.opened_ns).min().unwrap_or(0);
    let us = |ns: u64| ns.saturating_sub(origin) / 1_000;
    let mut out = String::new();
    let _ = writeln!(out, "# headroom apiserver tap v1");
    let _ = writeln!(out, "pattern {pattern}");
    let _ = writeln!(out, "command {command}");
    for c in conns {
        let _ = writeln!(
            out,
            "conn {} open {} alpn {} tls {}",
            c.id,
            us(c.opened_ns),
            c.alpn.as_deref().unwrap_or("-"),
            c.tls_version.as_deref().unwrap_or("-")
        );
        // Interleave chunks, requests and watch spans in time order.
        let mut lines: Vec<(u64, u8, String)> = Vec::new();
        for chunk in &c.chunks {
            let dir = if chunk.direction == event::EGRESS {
                "e"
            } else {
                "i"
            };
            let records = if chunk.records.is_empty() {
                "-".to_owned()
            } else {
                chunk
                    .records
                    .iter()
                    .map(|r| format!("{}:{}", r.content_type, r.length))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            lines.push((
                chunk.ts_ns,
                0,
                format!(
                    "seg {} {} {dir} {} {records}",
                    c.id,
                    us(chunk.ts_ns),
                    chunk.len
                ),
            ));
        }
        for r in &c.requests {
            let proto = match r.protocol {
                Protocol::Http1 => "h1",
                Protocol::Http2 => "h2",
            };
            let kind = if r.watch { "watch" } else { "get" };
            lines.push((
                r.ts_ns,
                1,
                format!("req {} {} {proto} {kind} {}", c.id, us(r.ts_ns), r.path),
            ));
        }
        for w in &c.watches {
            if let Some(end) = w.end_ns {
                lines.push((end, 2, format!("watchend {} {}", c.id, us(end))));
            }
        }
        lines.sort_by_key(|(ts, order, _)| (*ts, *order));
        for (_, _, line) in lines {
            let _ = writeln!(out, "{line}");
        }
        if let Some(closed) = c.closed_ns {
            let _ = writeln!(out, "close {} {}", c.id, us(closed));
        }
    }
    out
}

/// A connection's tap as the kernel would report it: `Connect`, one `Segment` per chunk
/// (record headers beyond [`event::MAX_RECORDS`] counted, not listed) and `Close` if the
/// server saw it end.
pub fn kernel_events(
    log: &ConnectionLog,
    cookie: u64,
    cgroup_id: u64,
    tgid: u32,
) -> Vec<KernelEvent> {
    let header = |direction: u32, ts_ns: u64| event::Header {
        kind: 0,
        direction,
        ts_ns,
        cgroup_id,
        cookie,
        tgid,
        endpoint_kind: collector_ebpf::EndpointKind::ApiServer as u32,
    };
    let mut events = vec![KernelEvent::Connect(event::Connect {
        header: event::Header {
            kind: event::CONNECT,
            ..header(0, log.opened_ns)
        },
        comm: *b"test-client\0\0\0\0\0",
        protocol: 6,
        reserved: 0,
    })];
    for chunk in &log.chunks {
        let mut record = [event::Record::default(); event::MAX_RECORDS];
        for (slot, r) in record.iter_mut().zip(&chunk.records) {
            *slot = event::Record {
                content_type: r.content_type,
                reserved: 0,
                length: r.length,
            };
        }
        let listed = chunk.records.len().min(event::MAX_RECORDS);
        events.push(KernelEvent::Segment(event::Segment {
            header: event::Header {
                kind: event::SEGMENT,
                ..header(chunk.direction, chunk.ts_ns)
            },
            payload_len: chunk.len,
            records: listed as u32,
            records_beyond: (chunk.records.len() - listed) as u32,
            desync: 0,
            record,
        }));
    }
    if let Some(closed) = log.closed_ns {
        events.push(KernelEvent::Close(event::Close {
            header: event::Header {
                kind: event::CLOSE,
                ..header(0, closed)
            },
        }));
    }
    events
}

/// One kernel event, as the ring buffer would deliver it.
#[derive(Clone, Copy, Debug)]
pub enum KernelEvent {
    Connect(event::Connect),
    Segment(event::Segment),
    Close(event::Close),
}

impl KernelEvent {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Connect(e) => e.header.ts_ns,
            Self::Segment(e) => e.header.ts_ns,
            Self::Close(e) => e.header.ts_ns,
        }
    }
}

/// A fresh test CA and a certificate for 127.0.0.1, ::1 and localhost signed by it, for other
/// stand-in servers: the CA's PEM and a rustls config (TLS 1.3 and 1.2; ALPN `h2` and
/// `http/1.1`, which a server that speaks only one should narrow).
pub fn server_tls() -> (String, rustls::ServerConfig) {
    make_tls(false)
}

fn make_tls(tls12_only: bool) -> (String, rustls::ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "headroom test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign CA");

    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])
    .expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &ca)
        .expect("sign server certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.pem(), config)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    config: Arc<ServerConfig>,
) {
    let mut next_id = 1;
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Connection {
            state: Mutex::new(ConnState {
                log: ConnectionLog {
                    id: next_id,
                    peer,
                    opened_ns: monotonic_ns(),
                    closed_ns: None,
                    alpn: None,
                    tls_version: None,
                    bytes_read: 0,
                    bytes_written: 0,
                    chunks: Vec::new(),
                    requests: Vec::new(),
                    watches: Vec::new(),
                },
                parsers: Default::default(),
            }),
        });
        next_id += 1;
        shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.clone());
        let tap = Tap {
            inner: tcp,
            conn: conn.clone(),
            shared: shared.clone(),
        };
        tokio::spawn(serve(
            tap,
            acceptor.clone(),
            conn,
            shared.clone(),
            config.clone(),
        ));
    }
}

async fn serve(
    tap: Tap<TcpStream>,
    acceptor: tokio_rustls::TlsAcceptor,
    conn: Arc<Connection>,
    shared: Arc<Shared>,
    config: Arc<ServerConfig>,
) {
    if let Ok(tls) = acceptor.accept(tap).await {
        {
            let (_, session) = tls.get_ref();
            let mut state = conn.lock();
            state.log.alpn = session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            state.log.tls_version = session.protocol_version().map(|v| format!("{v:?}"));
        }
        let service_conn = conn.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let (conn, shared, config) = (service_conn.clone(), shared.clone(), config.clone());
            async move { Ok::<_, Infallible>(route(req, &conn, &shared, &config).await) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), service)
            .await;
    }
    conn.lock().log.closed_ns = Some(monotonic_ns());
}

async fn route(
    req: Request<Incoming>,
    conn: &Arc<Connection>,
    shared: &Arc<Shared>,
    config: &ServerConfig,
) -> Response<ApiBody> {
    let ts_ns = monotonic_ns();
    let protocol = if req.version() == Version::HTTP_2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let watch = matches!(param("watch").as_deref(), Some("1" | "true"));
    let table = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=Table"));
    // Read (and drop) any request body before answering, as the real server does.
    let _ = req.into_body().collect().await;
    {
        let mut state = conn.lock();
        state.log.requests.push(ServedRequest {
            ts_ns,
            protocol,
            path: if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            },
            watch,
        });
        if watch && path == PODS_PATH {
            state.log.watches.push(WatchSpan {
                start_ns: ts_ns,
                end_ns: None,
            });
        }
    }
    match protocol {
        Protocol::Http1 => &shared.http1_requests,
        Protocol::Http2 => &shared.http2_requests,
    }
    .fetch_add(1, Ordering::SeqCst);

    let body = match path.as_str() {
        "/version" => serde_json::json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-headroom",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.0",
            "compiler": "gc", "platform": "linux/amd64"
        }),
        "/api" => serde_json::json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]
        }),
        "/apis" => serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        "/api/v1" => serde_json::json!({
            "kind": "APIResourceList", "groupVersion": "v1",
            "resources": [{
                "name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                "verbs": ["get", "list", "watch"], "shortNames": ["po"], "categories": ["all"]
            }]
        }),
        PODS_PATH if watch => {
            let timeout = param("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
            shared.open_watches.fetch_add(1, Ordering::SeqCst);
            let mut interval = tokio::time::interval(config.watch_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; the first event should come one interval later.
            interval.reset();
            return json_response(ApiBody::Watch(Box::new(WatchBody {
                interval,
                deadline: timeout,
                sent: 0,
                table,
                guard: WatchGuard {
                    conn: conn.clone(),
                    shared: shared.clone(),
                    start_ns: ts_ns,
                    ended: false,
                },
            })));
        }
        PODS_PATH if table => pod_table(config.pods, 1),
        PODS_PATH => serde_json::json!({
            "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
            "items": (0..config.pods).map(pod).collect::<Vec<_>>()
        }),
        _ => {
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("the server could not find the requested resource ({path})"),
                "reason": "NotFound", "code": 404
            });
            let mut resp = json_response(ApiBody::full(status.to_string()));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return resp;
        }
    };
    json_response(ApiBody::full(body.to_string()))
}

const PODS_PATH: &str = "/api/v1/namespaces/default/pods";

fn json_response(body: ApiBody) -> Response<ApiBody> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn pod(i: usize) -> serde_json::Value {
    serde_json::json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": format!("pod-{i}"), "namespace": "default", "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "resourceVersion": "1", "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"app": "headroom-test"}
        },
        "spec": {"nodeName": "node-0", "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "startTime": "2025-01-01T00:00:00Z"}
    })
}

/// A meta.k8s.io/v1 Table of pods, what `kubectl get pods` asks for.
fn pod_table(pods: usize, first: usize) -> serde_json::Value {
    let columns = ["Name", "Ready", "Status", "Restarts", "Age"].map(|name| {
        serde_json::json!({"name": name, "type": "string", "format": if name == "Name" { "name" } else { "" },
            "description": "", "priority": 0})
    });
    let rows: Vec<_> = (first..first + pods)
        .map(|i| {
            serde_json::json!({
                "cells": [format!("pod-{i}"), "1/1", "Running", "0", "1d"],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"name": format!("pod-{i}"), "namespace": "default",
                        "resourceVersion": "1", "creationTimestamp": "2025-01-01T00:00:00Z"}}
            })
        })
        .collect();
    serde_json::json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
        "columnDefinitions": columns, "rows": rows
    })
}

/// Ends a watch span (in the connection log and the open-watch gauge) exactly once.
struct WatchGuard {
    conn: Arc<Connection>,
    shared: Arc<Shared>,
    start_ns: u64,
    ended: bool,
}

impl WatchGuard {
    fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.shared.open_watches.fetch_sub(1, Ordering::SeqCst);
        let now = monotonic_ns();
        let mut state = self.conn.lock();
        if let Some(span) = state
            .log
            .watches
            .iter_mut()
            .find(|w| w.start_ns == self.start_ns && w.end_ns.is_none())
        {
            span.end_ns = Some(now);
        }
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.end();
    }
}

struct WatchBody {
    interval: tokio::time::Interval,
    deadline: Option<tokio::time::Instant>,
    sent: usize,
    table: bool,
    guard: WatchGuard,
}

enum ApiBody {
    Full(Option<Bytes>),
    Watch(Box<WatchBody>),
}

impl ApiBody {
    fn full(s: String) -> Self {
        Self::Full(Some(Bytes::from(s)))
    }
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Watch(w) => {
                if w.deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    w.guard.end();
                    return Poll::Ready(None);
                }
                ready!(w.interval.poll_tick(cx));
                w.sent += 1;
                let object = if w.table {
                    pod_table(1, 100 + w.sent)
                } else {
                    pod(100 + w.sent)
                };
                let line =
                    serde_json::json!({"type": "ADDED", "object": object}).to_string() + "\n";
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }
}

/// [`ApiServer::rust_h2_client`] for a server known by its address and CA (PEM) only: what
/// a client process started by a test (to run inside a cgroup) calls.
pub fn rust_h2_client(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    n: usize,
    concurrency: usize,
) -> Vec<u16> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    runtime.block_on(h2_client(
        addr,
        ca_pem.to_owned(),
        path.to_owned(),
        n,
        concurrency,
    ))
}

/// A hyper HTTP/2 client over rustls (the Rust client pattern): one connection, `n` GETs,
/// `concurrency` at a time.
async fn h2_client(
    addr: SocketAddr,
    ca_pem: String,
    path: String,
    n: usize,
    concurrency: usize,
) -> Vec<u16> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = pem_to_der(&ca_pem);
    roots.add(ca).expect("add CA to roots");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to test API server");
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .expect("TLS handshake");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    let driver = tokio::spawn(connection);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sender = sender.clone();
        let permit = semaphore.clone().acquire_owned();
        let uri = format!("https://{addr}{path}");
        tasks.push(tokio::spawn(async move {
            let _permit = permit.await.expect("semaphore open");
            let req = Request::get(uri)
                .body(Empty::<Bytes>::new())
                .expect("request");
            let resp = sender.send_request(req).await.expect("send request");
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }));
    }
    let mut statuses = Vec::with_capacity(n);
    for task in tasks {
        statuses.push(task.await.expect("request task"));
    }
    drop(sender);
    let _ = driver.await;
    statuses
}

fn pem_to_der(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("CA PEM")
}

/// Where the estimator's fixtures live (for recording them).
pub fn fixtures_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/apiserver/fixtures"
    ))
}
