//! Where the API server and cluster DNS are: the `kubernetes` Service address from the
//! environment plus the EndpointSlices of `default/kubernetes` (pods connect to the
//! Service address; the kubelet and host-network agents connect to the endpoints) — or,
//! where `discovery.k8s.io/v1` is not served (1.20 serves v1beta1), its core/v1
//! Endpoints — and
//! the kube-dns Service addresses plus the node's resolv.conf name servers. The connect
//! and sendmsg hooks see a Service address before kube-proxy's DNAT rewrites it and
//! record the socket; the packet hooks, which see the rewritten address, go by that
//! record when the address is not in the table (so the CoreDNS pods need not be).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt as _, StreamExt as _, future::BoxFuture};
use k8s_openapi::{
    api::{
        core::v1::{Endpoints as CoreEndpoints, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{Api, Client, runtime::watcher};
use tokio::sync::watch;

use super::{Health, Resource};
use crate::watch::{self as api_watch, BackoffConfig, Served};

/// A set of addresses the kernel should treat as one kind of endpoint.
pub type Endpoints = BTreeSet<SocketAddr>;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Ready (or not saying) endpoints of a slice, each at each TCP port.
pub fn slice_endpoints(slice: &EndpointSlice) -> Endpoints {
    let ports: Vec<u16> = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.port?).ok())
        .collect();
    slice
        .endpoints
        .iter()
        .flatten()
        // `ready` unset means ready; an API server being removed is not.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .flat_map(|ip| ports.iter().map(move |&port| SocketAddr::new(ip, port)))
        .collect()
}

/// Ready addresses of core/v1 Endpoints, each at each TCP port of its subset.
pub fn core_endpoints(endpoints: &CoreEndpoints) -> Endpoints {
    endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|subset| {
            let ports: Vec<u16> = subset
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter_map(|p| u16::try_from(p.port).ok())
                .collect();
            subset
                .addresses
                .iter()
                .flatten()
                .filter_map(|a| a.ip.parse::<IpAddr>().ok())
                .flat_map(move |ip| {
                    ports
                        .clone()
                        .into_iter()
                        .map(move |port| SocketAddr::new(ip, port))
                })
        })
        .collect()
}

/// The cluster IPs of a DNS Service at each of its port-53-style ports (UDP or TCP),
/// and every address (`[::]`) at each numeric target port other than its port: after
/// kube-proxy's DNAT a query to the Service's port 53 goes to a DNS pod's target port
/// (CoreDNS on 1053), and the packet hooks see only that. A named target port needs the
/// Service's EndpointSlices to resolve and is not measured after the DNAT.
pub fn service_endpoints(service: &Service) -> Endpoints {
    let Some(spec) = service.spec.as_ref() else {
        return Endpoints::new();
    };
    let ips: BTreeSet<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let ports: BTreeSet<u16> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    let target_ports: BTreeSet<u16> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| match &p.target_port {
            Some(IntOrString::Int(target)) if *target != p.port => u16::try_from(*target).ok(),
            _ => None,
        })
        .collect();
    let any = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
    ips.iter()
        .flat_map(|&ip| ports.iter().map(move |&port| SocketAddr::new(ip, port)))
        .chain(target_ports.iter().map(|&port| SocketAddr::new(any, port)))
        .collect()
}

/// The `nameserver` lines of a resolv.conf, at port 53.
pub fn resolv_conf_servers(text: &str) -> Endpoints {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (`fe80::1%eth0`) has no SocketAddr form here.
            words.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The union of `base` and every slice's endpoints.
fn union(base: &Endpoints, slices: &BTreeMap<String, Endpoints>) -> Endpoints {
    base.iter()
        .chain(slices.values().flatten())
        .copied()
        .collect()
}

fn publish(tx: &watch::Sender<Endpoints>, next: Endpoints) {
    tx.send_if_modified(|current| {
        let changed = *current != next;
        *current = next;
        changed
    });
}

/// How often discovery is asked again while `discovery.k8s.io/v1` is not (known to be)
/// served.
pub const DISCOVERY_RECHECK: Duration = Duration::from_secs(5 * 60);
/// What the collector does where EndpointSlices are not served.
pub const SLICES_FALLBACK: &str = "using the core/v1 Endpoints default/kubernetes instead";

/// Follows the API server's endpoints into `tx` (with `service` always in): the
/// EndpointSlices of `default/kubernetes` where discovery says `discovery.k8s.io/v1` is
/// served, else its core/v1 Endpoints, said once. Until discovery has said "served",
/// it is asked again every [`DISCOVERY_RECHECK`] (never per retry).
pub async fn watch_apiserver(
    client: Client,
    service: Endpoints,
    tx: watch::Sender<Endpoints>,
    backoff: BackoffConfig,
    health: Arc<Health>,
) {
    let slices = Resource::EndpointSlices;
    let mut current: Option<(bool, BoxFuture<'static, ()>)> = None;
    loop {
        let served = api_watch::served(&client, &slices.watched()).await;
        let use_slices = match &served {
            Served::Yes => true,
            Served::No => false,
            Served::Unknown(error) => {
                tracing::debug!(%error, "discovery of discovery.k8s.io/v1 failed; keeping the watch");
                current.as_ref().is_none_or(|(slices, _)| *slices)
            }
        };
        if current.as_ref().map(|(slices, _)| *slices) != Some(use_slices) {
            let (client, service, tx) = (client.clone(), service.clone(), tx.clone());
            let following = if use_slices {
                health.stopped(Resource::Endpoints.name());
                let api = Api::<EndpointSlice>::namespaced(client, "default");
                follow_slices(api, service, tx, backoff, health.clone()).boxed()
            } else {
                health.not_served(slices.name(), SLICES_FALLBACK);
                let api = Api::<CoreEndpoints>::namespaced(client, "default");
                follow_endpoints(api, service, tx, backoff, health.clone()).boxed()
            };
            current = Some((use_slices, following));
        }
        let Some((_, following)) = current.as_mut() else {
            return;
        };
        if served == Served::Yes {
            following.await;
            return;
        }
        tokio::select! {
            () = following => return,
            () = tokio::time::sleep(DISCOVERY_RECHECK) => {}
        }
    }
}

/// The EndpointSlices of `default/kubernetes` (label selector).
async fn follow_slices(
    api: Api<EndpointSlice>,
    service: Endpoints,
    tx: watch::Sender<Endpoints>,
    backoff: BackoffConfig,
    health: Arc<Health>,
) {
    let config =
        api_watch::cached_list_config().labels(&format!("{SERVICE_NAME_LABEL}=kubernetes"));
    let resource = Resource::EndpointSlices.name();
    let mut events = std::pin::pin!(api_watch::watch(api, config, resource, health, backoff));
    let mut slices: BTreeMap<String, Endpoints> = BTreeMap::new();
    let mut listing: BTreeMap<String, Endpoints> = BTreeMap::new();
    let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
    while let Some(event) = events.next().await {
        match event {
            watcher::Event::Init => {
                listing.clear();
                continue;
            }
            watcher::Event::InitApply(slice) => {
                listing.insert(name(&slice), slice_endpoints(&slice));
                continue;
            }
            watcher::Event::InitDone => slices = std::mem::take(&mut listing),
            watcher::Event::Apply(slice) => {
                slices.insert(name(&slice), slice_endpoints(&slice));
            }
            watcher::Event::Delete(slice) => {
                slices.remove(&name(&slice));
            }
        }
        publish(&tx, union(&service, &slices));
    }
}

/// The core/v1 Endpoints `default/kubernetes` (name field selector).
async fn follow_endpoints(
    api: Api<CoreEndpoints>,
    service: Endpoints,
    tx: watch::Sender<Endpoints>,
    backoff: BackoffConfig,
    health: Arc<Health>,
) {
    let config = api_watch::cached_list_config().fields("metadata.name=kubernetes");
    let resource = Resource::Endpoints.name();
    let mut events = std::pin::pin!(api_watch::watch(api, config, resource, health, backoff));
    let mut current = Current::default();
    while let Some(event) = events.next().await {
        if current.apply(event, core_endpoints) {
            publish(&tx, service.union(&current.live).copied().collect());
        }
    }
}

/// The addresses one watched object gives, kept from watcher events: a relist replaces
/// them only once complete.
#[derive(Debug, Default)]
struct Current {
    live: Endpoints,
    listed: Endpoints,
}

impl Current {
    /// Applies one event; whether `live` may have changed.
    fn apply<K>(&mut self, event: watcher::Event<K>, addresses: impl Fn(&K) -> Endpoints) -> bool {
        match event {
            watcher::Event::Init => {
                self.listed.clear();
                return false;
            }
            watcher::Event::InitApply(object) => {
                self.listed.extend(addresses(&object));
                return false;
            }
            watcher::Event::InitDone => self.live = std::mem::take(&mut self.listed),
            watcher::Event::Apply(object) => self.live = addresses(&object),
            watcher::Event::Delete(_) => self.live.clear(),
        }
        true
    }
}

/// Watches the one DNS Service (`metadata.name` field selector in its namespace) and
/// publishes its addresses plus `base` (resolv.conf's servers).
pub async fn watch_dns(
    api: Api<Service>,
    name: String,
    base: Endpoints,
    tx: watch::Sender<Endpoints>,
    backoff: BackoffConfig,
    health: Arc<Health>,
) {
    let config = api_watch::cached_list_config().fields(&format!("metadata.name={name}"));
    let resource = Resource::DnsService.name();
    let mut events = std::pin::pin!(api_watch::watch(api, config, resource, health, backoff));
    let mut current = Current::default();
    while let Some(event) = events.next().await {
        if current.apply(event, service_endpoints) {
            publish(&tx, base.union(&current.live).copied().collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!(
            "{}/tests/fixtures/cluster/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn addrs(list: &[&str]) -> Endpoints {
        list.iter()
            .map(|a| a.parse().expect("an address"))
            .collect()
    }

    #[test]
    fn kubernetes_slice_endpoints() {
        let slice: EndpointSlice = fixture("endpointslice-kubernetes.json");
        assert_eq!(
            slice_endpoints(&slice),
            addrs(&["10.0.0.10:6443", "10.0.0.11:6443"])
        );
    }

    #[test]
    fn not_ready_endpoints_and_udp_ports_are_left_out() {
        let mut slice: EndpointSlice = fixture("endpointslice-kubernetes.json");
        let endpoints = slice.endpoints.as_mut().expect("endpoints");
        endpoints[0].conditions.as_mut().expect("conditions").ready = Some(false);
        endpoints[1].conditions = None;
        let ports = slice.ports.as_mut().expect("ports");
        ports.push(k8s_openapi::api::discovery::v1::EndpointPort {
            port: Some(53),
            protocol: Some("UDP".into()),
            ..Default::default()
        });
        assert_eq!(slice_endpoints(&slice), addrs(&["10.0.0.11:6443"]));
    }

    #[test]
    fn core_endpoints_of_the_kubernetes_service() {
        let endpoints: CoreEndpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{
                "addresses": [{"ip": "10.0.0.10"}, {"ip": "10.0.0.11"}],
                "notReadyAddresses": [{"ip": "10.0.0.12"}],
                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
            }]
        }))
        .expect("Endpoints");
        assert_eq!(
            core_endpoints(&endpoints),
            addrs(&["10.0.0.10:6443", "10.0.0.11:6443"])
        );
        assert!(core_endpoints(&CoreEndpoints::default()).is_empty());
    }

    #[test]
    fn kube_dns_service_addresses() {
        let service: Service = fixture("service-kube-dns.json");
        assert_eq!(service_endpoints(&service), addrs(&["10.96.0.10:53"]));
        // CoreDNS listening on 1053 behind port 53: that port on every address too.
        let mut mapped = service.clone();
        for port in mapped
            .spec
            .as_mut()
            .and_then(|s| s.ports.as_mut())
            .expect("ports")
        {
            port.target_port = Some(IntOrString::Int(1053));
        }
        assert_eq!(
            service_endpoints(&mapped),
            addrs(&["10.96.0.10:53", "[::]:1053"])
        );
        let mut named = service;
        for port in named
            .spec
            .as_mut()
            .and_then(|s| s.ports.as_mut())
            .expect("ports")
        {
            port.target_port = Some(IntOrString::String("dns".into()));
        }
        assert_eq!(service_endpoints(&named), addrs(&["10.96.0.10:53"]));
    }

    #[test]
    fn resolv_conf_name_servers() {
        let text = "# generated by resolvconf\nnameserver 10.96.0.10\nnameserver fd00::a\n\
                    nameserver fe80::1%eth0\nsearch default.svc.cluster.local\noptions ndots:5\n";
        assert_eq!(
            resolv_conf_servers(text),
            addrs(&["10.96.0.10:53", "[fd00::a]:53"])
        );
        assert!(resolv_conf_servers("").is_empty());
    }

    #[test]
    fn union_keeps_the_service_address() {
        let service = addrs(&["10.96.0.1:443"]);
        let mut slices = BTreeMap::new();
        slices.insert("kubernetes".into(), addrs(&["10.0.0.10:6443"]));
        assert_eq!(
            union(&service, &slices),
            addrs(&["10.96.0.1:443", "10.0.0.10:6443"])
        );
        slices.clear();
        assert_eq!(union(&service, &slices), service);
    }

    #[test]
    fn publish_notifies_only_on_change() {
        let (tx, mut rx) = watch::channel(Endpoints::new());
        rx.mark_unchanged();
        publish(&tx, addrs(&["10.0.0.10:6443"]));
        assert!(rx.has_changed().expect("open"));
        rx.mark_unchanged();
        publish(&tx, addrs(&["10.0.0.10:6443"]));
        assert!(!rx.has_changed().expect("open"));
    }
}
