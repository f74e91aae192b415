//! Shared by the integration tests and the benchmark: a throwaway PKI, a started server, an
//! HTTPS client, and AdmissionReview v1 builders around recorded kubectl objects.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{StatusCode, client::conn::http1};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use serde_json::{Value, json};
use webhook::{admission::State, inventory::Inventory, server};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A recorded object: JSON as kubectl printed it, or a YAML manifest.
pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture exists");
    if name.ends_with(".json") {
        serde_json::from_str(&text).expect("fixture is JSON")
    } else {
        serde_yaml::from_str(&text).expect("fixture is YAML")
    }
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "headroom-webhook-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A CA and a server certificate for localhost/127.0.0.1 signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn generate(ca_name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// How a test server gets its profiles.
pub enum Profiles {
    None,
    /// A recorded profile fixture, its `generatedAt` moved to now: the data's age is judged
    /// from it.
    File(&'static str),
    /// Collector base URLs polled for `/profiles`.
    Collectors(Vec<String>),
    /// A Prometheus base URL.
    Prometheus(String),
}

/// `name` from the fixtures, as measured just now.
pub fn fresh_profiles(name: &str, dir: &Path) -> PathBuf {
    let mut list = fixture(name);
    let now = k8s_openapi::jiff::Timestamp::now();
    list["generatedAt"] = json!(
        k8s_openapi::jiff::Timestamp::from_second(now.as_second())
            .expect("now")
            .to_string()
    );
    let path = dir.join(Path::new(name).file_name().expect("a file name"));
    std::fs::write(&path, serde_json::to_vec(&list).expect("json")).expect("write profiles");
    path
}

pub struct TestServer {
    pub running: server::Running,
    pub state: Arc<State>,
    pub pki: Pki,
    pub dir: PathBuf,
    expects_data: bool,
}

pub async fn start_server(profiles: Profiles, nodes: u64) -> TestServer {
    start_server_with(profiles, nodes, &fixtures().join("budget.yaml")).await
}

/// A server on `budget`; returns once its first profile fetch is in (ready).
pub async fn start_server_with(profiles: Profiles, nodes: u64, budget: &Path) -> TestServer {
    let server = start_server_unready(profiles, nodes, budget).await;
    if server.expects_data {
        for _ in 0..1000 {
            if server.state.ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(server.state.ready(), "no profile data after 10 s");
    }
    server
}

/// A server on `budget`, returned as soon as it serves (its profiles may still be
/// coming).
pub async fn start_server_unready(profiles: Profiles, nodes: u64, budget: &Path) -> TestServer {
    let dir = temp_dir("server");
    let pki = Pki::generate("headroom test CA");
    let (tls_cert, tls_key) = pki.write(&dir);
    let config = server::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert,
        tls_key,
        budget: Some(budget.to_owned()),
        cluster: None,
        profiles: match &profiles {
            Profiles::File(name) => Some(fresh_profiles(name, &dir)),
            _ => None,
        },
        collectors: match &profiles {
            Profiles::Collectors(urls) => urls.clone(),
            _ => Vec::new(),
        },
        prometheus: match &profiles {
            Profiles::Prometheus(url) => Some(url.clone()),
            _ => None,
        },
        refresh: Duration::from_millis(200),
        inventory: Inventory::uniform(nodes),
        nodes_file: None,
    };
    let (running, state) = server::start(config).await.expect("server starts");
    TestServer {
        running,
        state,
        pki,
        dir,
        expects_data: !matches!(profiles, Profiles::None),
    }
}

/// One HTTPS (HTTP/1.1, keep-alive) connection to the webhook.
pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = connector.connect(name, tcp).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Client { sender })
    }

    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> (StatusCode, Bytes) {
        self.sender.ready().await.expect("connection ready");
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.into()))
            .expect("request");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, body)
    }

    /// Posts an AdmissionReview and returns its `response`.
    pub async fn review(&mut self, review: &Value) -> Value {
        let (status, body) = self
            .post("/validate", serde_json::to_vec(review).expect("json"))
            .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).expect("response is JSON");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        answer["response"].clone()
    }
}

/// One HTTPS connection speaking HTTP/2 (ALPN `h2`), as the API server calls webhooks.
/// Clones share the connection (concurrent streams).
#[derive(Clone)]
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<H2Body>,
}

type H2Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

impl H2Client {
    pub async fn connect(addr: SocketAddr, pki: &Pki) -> std::io::Result<H2Client> {
        let mut config = (*pki.client_config(rustls::DEFAULT_VERSIONS)).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        // As Go's net/http (the API server) sets it: no Nagle delay on small frames.
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = connector.connect(name, tcp).await?;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "the server negotiates HTTP/2"
        );
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(H2Client { sender })
    }

    /// Posts `body` to `path` with its content-length; the status and body, or the HTTP/2
    /// error.
    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        self.send(path, Full::new(body.into()).boxed()).await
    }

    /// Posts `body` in 64 KiB DATA frames with no content-length.
    pub async fn post_streamed(
        &mut self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = body
            .chunks(64 * 1024)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let stream = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        self.send(path, stream.boxed()).await
    }

    /// Posts `total` bytes fed chunk by chunk while the answer is awaited, as a client
    /// still sending when the server answers; also returns how many bytes the client got to
    /// send before the stream ended (a reset stops it short).
    pub async fn post_while_sending(
        &mut self,
        path: &str,
        total: usize,
    ) -> Result<(StatusCode, Bytes, usize), hyper::Error> {
        let (mut tx, rx) = futures::channel::mpsc::channel::<
            Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
        >(4);
        let feeder = tokio::spawn(async move {
            use futures::SinkExt;
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            let mut sent = 0;
            while sent < total {
                let n = chunk.len().min(total - sent);
                if tx
                    .send(Ok(hyper::body::Frame::data(chunk.slice(..n))))
                    .await
                    .is_err()
                {
                    break;
                }
                sent += n;
            }
            sent
        });
        let (status, body) = self
            .send(path, http_body_util::StreamBody::new(rx).boxed())
            .await?;
        let sent = feeder.await.expect("feeder");
        Ok((status, body, sent))
    }

    async fn send(
        &mut self,
        path: &str,
        body: H2Body,
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        self.sender.ready().await?;
        let request = hyper::Request::post(format!("https://localhost{path}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request");
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Plain HTTP GET on the metrics port.
pub async fn http_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Builds an AdmissionReview v1 as the API server sends it.
pub struct Review {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    resource: &'static str,
    sub_resource: Option<&'static str>,
    operation: &'static str,
    namespace: String,
    name: String,
    object: Value,
    old_object: Value,
    dry_run: bool,
}

static UID: AtomicU64 = AtomicU64::new(1);

impl Review {
    fn for_object(operation: &'static str, object: &Value) -> Review {
        let kind = object["kind"].as_str().expect("object kind");
        let (group, resource, kind) = match kind {
            "Deployment" => ("apps", "deployments", "Deployment"),
            "DaemonSet" => ("apps", "daemonsets", "DaemonSet"),
            "StatefulSet" => ("apps", "statefulsets", "StatefulSet"),
            "ReplicaSet" => ("apps", "replicasets", "ReplicaSet"),
            "Job" => ("batch", "jobs", "Job"),
            "CronJob" => ("batch", "cronjobs", "CronJob"),
            "Pod" => ("", "pods", "Pod"),
            other => panic!("no builder for {other}"),
        };
        Review {
            group,
            version: "v1",
            kind,
            resource,
            sub_resource: None,
            operation,
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            object: Value::Null,
            old_object: Value::Null,
            dry_run: false,
        }
    }

    pub fn create(object: Value) -> Review {
        let mut r = Review::for_object("CREATE", &object);
        r.object = object;
        r
    }

    pub fn update(old: Value, new: Value) -> Review {
        let mut r = Review::for_object("UPDATE", &new);
        r.object = new;
        r.old_object = old;
        r
    }

    pub fn delete(old: Value) -> Review {
        let mut r = Review::for_object("DELETE", &old);
        r.old_object = old;
        r
    }

    /// An UPDATE of `deployments/scale` from `old` to `new` replicas.
    pub fn scale(namespace: &str, name: &str, old: i64, new: i64) -> Review {
        Review::scale_of("deployments", namespace, name, old, new)
    }

    /// An UPDATE of `apps/<resource>/scale` from `old` to `new` replicas.
    pub fn scale_of(
        resource: &'static str,
        namespace: &str,
        name: &str,
        old: i64,
        new: i64,
    ) -> Review {
        let scale = |replicas: i64| {
            json!({
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    "name": name, "namespace": namespace,
                    "uid": "5b1e4c4e-6a43-4d5d-9f0e-0c1c3e0f7a11",
                    "resourceVersion": "4242",
                    "creationTimestamp": "2026-11-22T04:00:00Z"
                },
                "spec": {"replicas": replicas},
                "status": {"replicas": old, "selector": format!("app={name}")}
            })
        };
        Review {
            group: "autoscaling",
            version: "v1",
            kind: "Scale",
            resource,
            sub_resource: Some("scale"),
            operation: "UPDATE",
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            object: scale(new),
            old_object: scale(old),
            dry_run: false,
        }
    }

    pub fn dry_run(mut self) -> Review {
        self.dry_run = true;
        self
    }

    pub fn build(&self) -> Value {
        let uid = format!(
            "0d5f2b8e-0000-4000-8000-{:012}",
            UID.fetch_add(1, Ordering::Relaxed)
        );
        let resource_group = if self.sub_resource.is_some() {
            "apps"
        } else {
            self.group
        };
        let options_kind = match self.operation {
            "CREATE" => "CreateOptions",
            "UPDATE" => "UpdateOptions",
            _ => "DeleteOptions",
        };
        let mut request = json!({
            "uid": uid,
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "resource": {"group": resource_group, "version": "v1", "resource": self.resource},
            "requestKind": {"group": self.group, "version": self.version, "kind": self.kind},
            "requestResource": {"group": resource_group, "version": "v1", "resource": self.resource},
            "name": self.name,
            "namespace": self.namespace,
            "operation": self.operation,
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["kubeadm:cluster-admins", "system:authenticated"]
            },
            "object": self.object,
            "oldObject": self.old_object,
            "dryRun": self.dry_run,
            "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}
        });
        if let Some(sub) = self.sub_resource {
            request["subResource"] = json!(sub);
            request["requestSubResource"] = json!(sub);
        }
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request})
    }
}

/// The recorded `kubectl create deployment web --image=nginx:1.27 --replicas=3` object, as the
/// API server would pass it (namespace set), with `replicas`.
pub fn web_deployment(name: &str, replicas: i64) -> Value {
    let mut v = fixture("deployment-web.json");
    v["metadata"]["name"] = json!(name);
    v["metadata"]["namespace"] = json!("default");
    v["spec"]["replicas"] = json!(replicas);
    v
}

pub fn agent_daemonset() -> Value {
    fixture("daemonset-agent.yaml")
}

/// The Debian Prometheus on loopback, scraping `targets` (`host:port`, job `apiserver`)
/// every second; with none, every query it answers is an empty vector. Stopped on drop.
pub struct RealPrometheus {
    child: std::process::Child,
    pub url: String,
}

impl RealPrometheus {
    pub async fn start(dir: &std::path::Path, targets: &[String]) -> RealPrometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let config = dir.join("prometheus.yml");
        let mut text = "global:\n  scrape_interval: 1s\n".to_owned();
        if !targets.is_empty() {
            let targets = targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!(
                "scrape_configs:\n  - job_name: apiserver\n    static_configs:\n      \
                 - targets: [{targets}]\n"
            ));
        }
        std::fs::write(&config, text).expect("write prometheus.yml");
        let mut child = std::process::Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("/usr/bin/prometheus (Debian package prometheus) runs");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && http_get(addr, "/-/ready").await.0 == StatusCode::OK
            {
                return RealPrometheus {
                    child,
                    url: format!("http://{addr}"),
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("Prometheus not ready after 30 s");
    }
}

impl Drop for RealPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
