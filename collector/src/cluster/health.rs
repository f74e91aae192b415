//! The collector's own watches as [`crate::watch`] tracks them: which resources, where
//! their RBAC is, and their health as the self-metrics read it at scrape time.
pub use crate::watch::{ErrorReason, Health};
use crate::{
    metrics::{WatchHealth, WatchHealthSource},
    watch::Watched,
};

/// The RBAC that grants the collector's watches.
pub const RBAC: &str = "deploy/collector/rbac.yaml";

/// What the collector watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Pods,
    EndpointSlices,
    /// core/v1 Endpoints of `default/kubernetes`: the fallback where
    /// `discovery.k8s.io/v1` is not served.
    Endpoints,
    DnsService,
}

impl Resource {
    pub const ALL: [Self; 4] = [
        Self::Pods,
        Self::EndpointSlices,
        Self::Endpoints,
        Self::DnsService,
    ];

    /// The Kubernetes resource name, as the API server's own metrics label it.
    pub fn name(self) -> &'static str {
        self.watched().resource
    }

    pub fn watched(self) -> Watched {
        let (resource, api_version) = match self {
            Self::Pods => ("pods", "v1"),
            Self::EndpointSlices => ("endpointslices", "discovery.k8s.io/v1"),
            Self::Endpoints => ("endpoints", "v1"),
            Self::DnsService => ("services", "v1"),
        };
        Watched {
            resource,
            api_version,
            rbac: RBAC,
        }
    }
}

impl AsRef<str> for Resource {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

/// The health of every watch the collector may run, idle until started.
pub fn health() -> Health {
    Health::new(&Resource::ALL.map(Resource::watched))
}

impl WatchHealthSource for Health {
    fn watch_health(&self) -> Vec<WatchHealth> {
        self.reports()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_and_reason_is_reported_from_the_start() {
        let health = health();
        let report = health.watch_health();
        assert_eq!(
            report.iter().map(|w| w.resource).collect::<Vec<_>>(),
            ["pods", "endpointslices", "endpoints", "services"]
        );
        for watch in &report {
            assert_eq!(watch.errors.len(), ErrorReason::ALL.len());
            assert!(watch.errors.iter().all(|&(_, n)| n == 0));
            assert_eq!((watch.lists, watch.ready, watch.served), (0, None, true));
        }
        health.started(Resource::Pods.name());
        assert_eq!(health.watch_health()[0].ready, Some(false));
        assert_eq!(
            health.readiness().problems,
            ["pods: not listed yet"],
            "a started watch counts for readiness, idle ones do not"
        );
        assert_eq!(
            Resource::EndpointSlices.watched().qualified(),
            "endpointslices.discovery.k8s.io"
        );
    }
}
