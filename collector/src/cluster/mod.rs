//! The collector in a cluster: one pod watch for this node, API server and DNS discovery.
//!
//! The collector's own API footprint is O(1) per node: one watch of this node's pods
//! (`spec.nodeName` field selector), one of the `default/kubernetes` EndpointSlices
//! (label selector; core/v1 Endpoints by name where `discovery.k8s.io/v1` is not
//! served) and one of the kube-dns Service (name field selector); lists are served from
//! the API server's watch cache; no cluster-wide list anywhere. Every watch runs as
//! [`crate::watch`] runs it (backoff that holds, logs once per change, readiness), and
//! while the API server is away the collector keeps measuring with what it last knew.
//! Every request carries `User-Agent: headroom-collector/<version> (<node>)`.
//!
//! Outside a pod, `--kubeconfig` gives the client instead of the service account, and
//! its server's address is measured as the API server.
//!
//! Without a cluster (no `KUBERNETES_SERVICE_HOST` nor `--kubeconfig`, or
//! `--standalone`) the endpoints come from flags and cgroups are named from their paths
//! alone.
pub mod endpoints;
pub mod gone;
pub mod health;
pub mod pods;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{Api, Client};
use tokio::{sync::watch, task::JoinHandle};

pub use self::{
    endpoints::Endpoints,
    gone::{DEFAULT_GRACE, GoneSince},
    health::{ErrorReason, Health, Resource},
    pods::{PodCache, SharedPods},
};
use crate::watch as api_watch;
pub use crate::watch::BackoffConfig;

/// The downward-API variable that names this node.
pub const NODE_NAME_ENV: &str = "NODE_NAME";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{NODE_NAME_ENV} is not set: in a cluster the collector watches only its node's pods \
         and needs its node name from the downward API (env: - name: {NODE_NAME_ENV}, \
         valueFrom: fieldRef: fieldPath: spec.nodeName) or --node-name, or run it with \
         --standalone"
    )]
    NoNodeName,
    #[error(
        "KUBERNETES_SERVICE_HOST={host:?} / KUBERNETES_SERVICE_PORT={port:?} is not an \
         address and port; the kubelet sets them in every pod"
    )]
    ServiceAddress { host: String, port: String },
    #[error("cannot read the in-cluster service account configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot use the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "the kubeconfig's server {url} has no address this node can resolve; give one by IP \
         address or a name in DNS"
    )]
    ServerAddress { url: String },
    #[error("cannot build the API client: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "the node name {node:?} cannot go in a User-Agent header: give --node-name as the \
         node's name (letters, digits, '-', '.')"
    )]
    NodeName { node: String },
}

/// Where the collector runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In a pod: the `kubernetes` Service address and this node's name.
    InCluster { service: SocketAddr, node: String },
    /// Outside a pod, through a kubeconfig (`--kubeconfig`), and this node's name.
    Kubeconfig { path: PathBuf, node: String },
    /// No cluster: endpoints from flags.
    Standalone,
}

/// Decides the mode from the environment (`env` looks a variable up), the
/// `--standalone` flag and `--kubeconfig`: standalone wins, then a kubeconfig, then the
/// kubelet's variables.
pub fn mode(
    env: impl Fn(&str) -> Option<String>,
    standalone: bool,
    kubeconfig: Option<&Path>,
) -> Result<Mode, Error> {
    let node = || {
        env(NODE_NAME_ENV)
            .filter(|n| !n.is_empty())
            .ok_or(Error::NoNodeName)
    };
    if let (Some(path), false) = (kubeconfig, standalone) {
        return Ok(Mode::Kubeconfig {
            path: path.to_owned(),
            node: node()?,
        });
    }
    let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty());
    let (Some(host), false) = (host, standalone) else {
        return Ok(Mode::Standalone);
    };
    let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
    let service = host
        .parse::<IpAddr>()
        .ok()
        .zip(port.parse::<u16>().ok())
        .map(|(ip, port)| SocketAddr::new(ip, port))
        .ok_or_else(|| Error::ServiceAddress {
            host: host.clone(),
            port: port.clone(),
        })?;
    Ok(Mode::InCluster {
        service,
        node: node()?,
    })
}

/// `headroom-collector/<version> (<node>)`: who is calling, in the audit log and APF.
pub fn user_agent(node: &str) -> String {
    api_watch::user_agent("headroom-collector", Some(node))
}

/// A client from `config` whose requests carry the collector's `User-Agent`.
pub fn client_for(mut config: kube::Config, node: &str) -> Result<Client, Error> {
    let agent = user_agent(node);
    api_watch::prepare(&mut config, &agent).map_err(|_| Error::NodeName {
        node: node.to_owned(),
    })?;
    Client::try_from(config).map_err(Error::Client)
}

/// The client a kubeconfig describes (its current context), and the address of its
/// server, which the kernel should measure as the API server.
pub async fn kubeconfig_client(path: &Path, node: &str) -> Result<(Client, SocketAddr), Error> {
    let kubeconfig_error = |source| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(kubeconfig_error)?;
    let url = &config.cluster_url;
    let unresolved = || Error::ServerAddress {
        url: url.to_string(),
    };
    let host = url.host().ok_or_else(unresolved)?;
    let default_port = if url.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    let port = url.port_u16().unwrap_or(default_port);
    // `[fd00::1]` in a URL is the address `fd00::1`.
    let service = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(unresolved)?,
    };
    let client = client_for(config, node)?;
    Ok((client, service))
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    pub node: String,
    /// The `kubernetes` Service address (from the environment).
    pub service: SocketAddr,
    /// How long a deleted pod keeps its name (and its series).
    pub gone_grace: Duration,
    pub backoff: BackoffConfig,
    /// The cluster DNS Service (`kube-system/kube-dns`).
    pub dns_service: (String, String),
    /// Name servers of the node, measured as DNS too.
    pub resolv_conf: PathBuf,
}

impl ClusterConfig {
    pub fn new(node: impl Into<String>, service: SocketAddr) -> Self {
        Self {
            node: node.into(),
            service,
            gone_grace: DEFAULT_GRACE,
            backoff: BackoffConfig::default(),
            dns_service: ("kube-system".into(), "kube-dns".into()),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// The running discovery: pods of this node, API server endpoints and DNS servers.
/// Dropping it stops the watches.
#[derive(Debug)]
pub struct Cluster {
    pods: SharedPods,
    apiserver: watch::Receiver<Endpoints>,
    dns: watch::Receiver<Endpoints>,
    health: Arc<Health>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// In a pod: the service account's client, then [`Cluster::start`].
    pub fn in_cluster(config: ClusterConfig) -> Result<Self, Error> {
        let kube_config = kube::Config::incluster().map_err(Error::InCluster)?;
        let client = client_for(kube_config, &config.node)?;
        Ok(Self::start(client, config))
    }

    /// Starts the three watches on the current tokio runtime.
    pub fn start(client: Client, config: ClusterConfig) -> Self {
        let health = Arc::new(health::health());
        // Counted from now: discovery comes before the API server endpoints' watch.
        health.started(Resource::EndpointSlices.name());
        let pods = SharedPods::new(config.gone_grace);
        let service = Endpoints::from([config.service]);
        let resolv = std::fs::read_to_string(&config.resolv_conf)
            .map(|text| endpoints::resolv_conf_servers(&text))
            .unwrap_or_default();
        let (apiserver_tx, apiserver) = watch::channel(service.clone());
        let (dns_tx, dns) = watch::channel(resolv.clone());
        let (dns_namespace, dns_name) = config.dns_service;
        let tasks = vec![
            tokio::spawn(pods::watch(
                Api::<Pod>::all(client.clone()),
                config.node,
                pods.clone(),
                config.backoff,
                health.clone(),
            )),
            tokio::spawn(endpoints::watch_apiserver(
                client.clone(),
                service,
                apiserver_tx,
                config.backoff,
                health.clone(),
            )),
            tokio::spawn(endpoints::watch_dns(
                Api::<Service>::namespaced(client, &dns_namespace),
                dns_name,
                resolv,
                dns_tx,
                config.backoff,
                health.clone(),
            )),
        ];
        Self {
            pods,
            apiserver,
            dns,
            health,
            tasks,
        }
    }

    /// No cluster: fixed endpoints (from flags), no pods.
    pub fn standalone(apiserver: Endpoints, dns: Endpoints) -> Self {
        Self {
            pods: SharedPods::new(DEFAULT_GRACE),
            apiserver: watch::channel(apiserver).1,
            dns: watch::channel(dns).1,
            health: Arc::new(health::health()),
            tasks: Vec::new(),
        }
    }

    pub fn pods(&self) -> &SharedPods {
        &self.pods
    }

    /// API server addresses; `changed().await` on a clone to follow updates.
    pub fn apiserver_endpoints(&self) -> watch::Receiver<Endpoints> {
        self.apiserver.clone()
    }

    /// DNS server addresses; as [`Cluster::apiserver_endpoints`].
    pub fn dns_servers(&self) -> watch::Receiver<Endpoints> {
        self.dns.clone()
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn in_cluster_from_the_kubelets_variables() {
        let vars = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("NODE_NAME", "node-a"),
        ]);
        assert_eq!(
            mode(&vars, false, None).expect("a mode"),
            Mode::InCluster {
                service: "10.96.0.1:443".parse().expect("addr"),
                node: "node-a".into()
            }
        );
        assert_eq!(mode(&vars, true, None).expect("a mode"), Mode::Standalone);
    }

    #[test]
    fn standalone_without_a_cluster() {
        assert_eq!(
            mode(env(&[]), false, None).expect("a mode"),
            Mode::Standalone
        );
        assert_eq!(
            mode(env(&[("KUBERNETES_SERVICE_HOST", "")]), false, None).expect("a mode"),
            Mode::Standalone
        );
    }

    #[test]
    fn ipv6_service_and_errors_that_say_what_to_set() {
        let v6 = env(&[
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
            ("NODE_NAME", "n"),
        ]);
        assert!(
            matches!(mode(v6, false, None), Ok(Mode::InCluster { service, .. }) if service.port() == 6443)
        );
        let no_node = env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]);
        let message = mode(no_node, false, None).expect_err("no node").to_string();
        assert!(message.contains("fieldPath: spec.nodeName"), "{message}");
        let bad = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "https"),
            ("NODE_NAME", "n"),
        ]);
        assert!(matches!(
            mode(bad, false, None),
            Err(Error::ServiceAddress { .. })
        ));
    }

    #[test]
    fn a_kubeconfig_needs_a_node_name_and_yields_to_standalone() {
        let path = Path::new("/etc/headroom/kubeconfig");
        let vars = env(&[
            ("NODE_NAME", "node-a"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ]);
        assert_eq!(
            mode(&vars, false, Some(path)).expect("a mode"),
            Mode::Kubeconfig {
                path: path.into(),
                node: "node-a".into()
            }
        );
        assert_eq!(
            mode(&vars, true, Some(path)).expect("a mode"),
            Mode::Standalone
        );
        assert!(matches!(
            mode(env(&[]), false, Some(path)),
            Err(Error::NoNodeName)
        ));
    }

    #[tokio::test]
    async fn a_kubeconfigs_server_is_the_api_server_to_measure() {
        let dir = std::env::temp_dir().join(format!("headroom-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("kubeconfig");
        let kubeconfig = |server: &str| {
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
                 users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    \
                 cluster: c\n    user: u\ncurrent-context: x\n"
            )
        };
        for (server, want) in [
            ("https://10.0.0.10:6443", "10.0.0.10:6443"),
            ("https://[fd00::1]", "[fd00::1]:443"),
            ("https://localhost:6443", "127.0.0.1:6443"),
        ] {
            std::fs::write(&path, kubeconfig(server)).expect("write kubeconfig");
            let (_, service) = kubeconfig_client(&path, "node-a").await.expect("a client");
            let want: SocketAddr = want.parse().expect("addr");
            // localhost may resolve to ::1 first.
            assert!(
                service == want || (server.contains("localhost") && service.ip().is_loopback()),
                "{server}: {service}"
            );
        }
        let missing = dir.join("nope");
        let Err(error) = kubeconfig_client(&missing, "node-a").await else {
            panic!("a client from a missing kubeconfig");
        };
        let message = error.to_string();
        assert!(message.contains("nope"), "{message}");
        std::fs::remove_dir_all(&dir).expect("remove scratch dir");
    }

    #[tokio::test]
    async fn standalone_serves_the_flags() {
        let api: Endpoints = ["127.0.0.1:6443".parse().expect("addr")].into();
        let cluster = Cluster::standalone(api.clone(), Endpoints::new());
        assert_eq!(*cluster.apiserver_endpoints().borrow(), api);
        assert!(cluster.pods().read().index().is_empty());
    }
}
