//! Keeping the kernel's endpoint table in step with discovery: the API server
//! endpoints and DNS servers the cluster watches report replace the discovered ones
//! live; endpoints from flags stay whatever discovery says.
use std::{collections::BTreeSet, net::SocketAddr};

use collector_ebpf::EndpointKind;

use crate::{cluster::Endpoints, ebpf::Probes, endpoint, error::Result};

/// What to change in the kernel's table to go from `current` to `wanted`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub add: Vec<SocketAddr>,
    pub remove: Vec<SocketAddr>,
}

/// The change from `current` to `wanted`, leaving `fixed` (from flags) alone: never
/// removed, and never added again.
pub fn diff(current: &Endpoints, wanted: &Endpoints, fixed: &BTreeSet<SocketAddr>) -> Diff {
    Diff {
        add: wanted
            .difference(current)
            .filter(|a| !fixed.contains(a))
            .copied()
            .collect(),
        remove: current
            .difference(wanted)
            .filter(|a| !fixed.contains(a))
            .copied()
            .collect(),
    }
}

/// The discovered endpoints of one kind that are in the kernel's table now.
#[derive(Debug)]
pub struct Discovered {
    kind: EndpointKind,
    /// From flags: put in at start, never touched here.
    fixed: BTreeSet<SocketAddr>,
    /// Discovered and put in by [`Discovered::apply`].
    current: Endpoints,
}

impl Discovered {
    pub fn new(kind: EndpointKind, fixed: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            kind,
            fixed: fixed.into_iter().collect(),
            current: Endpoints::new(),
        }
    }

    pub fn current(&self) -> &Endpoints {
        &self.current
    }

    /// Brings the kernel's table to `wanted`, skipping addresses that `taken` (the
    /// other kind's) holds: an address is measured as one kind only. Returns what
    /// changed.
    pub fn apply(
        &mut self,
        probes: &mut Probes,
        wanted: &Endpoints,
        taken: &BTreeSet<SocketAddr>,
    ) -> Result<Diff> {
        let wanted: Endpoints = wanted
            .iter()
            .filter(|a| !taken.contains(a))
            .copied()
            .collect();
        let change = diff(&self.current, &wanted, &self.fixed);
        for addr in &change.remove {
            probes.remove_endpoint(endpoint::key_of(*addr))?;
            self.current.remove(addr);
        }
        for addr in &change.add {
            probes.add_endpoint(endpoint::key_of(*addr), self.kind)?;
            self.current.insert(*addr);
        }
        Ok(change)
    }

    /// Every address of this kind in the table (fixed and discovered).
    pub fn all(&self) -> BTreeSet<SocketAddr> {
        self.fixed.union(&self.current).copied().collect()
    }
}
