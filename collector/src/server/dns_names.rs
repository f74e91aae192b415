//! `GET /dns/names`: the names each workload's DNS queries asked for most on this node,
//! from the DNS tracker's bounded top-K tables (docs/dns-names.md). Names are never
//! labels of a series; this is where an operator sees what an `ndots:5` search list or
//! a chatty client makes a pod ask — and the one place a query name leaves the process,
//! so `--dns-names` ([`DnsNames`]) decides here whether it leaves as it is, hashed, or
//! not at all.
use std::hash::{BuildHasher as _, RandomState};

use crate::metrics::Snapshot;
pub use crate::schema::dns_names::{API_VERSION, DnsNameList, Item, KIND, Name};

/// How query names leave the collector (`--dns-names`). Names can be sensitive (a
/// customer's domain, an internal host name), so an operator may hide them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsNames {
    /// No name leaves the process: `/dns/names` answers 404 saying so.
    Off,
    /// Each name is replaced by a keyed hash (`hash:` and 16 hex digits), the same for
    /// the same name while the process lives: "one name dominates" still shows.
    Hash,
    /// Names as asked.
    #[default]
    Plain,
}

impl DnsNames {
    /// The mode a configuration file names, as the flag spells it.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(text, false).ok()
    }
}

/// The mode and, for [`DnsNames::Hash`], its key.
#[derive(Clone, Debug)]
pub struct NamePolicy {
    mode: DnsNames,
    /// SipHash-1-3 keyed with 128 random bits drawn once at start (std's `RandomState`):
    /// without the key, which never leaves the process, a hash cannot be checked against
    /// a guessed name; it differs between collectors and across restarts.
    key: RandomState,
}

impl NamePolicy {
    pub fn new(mode: DnsNames) -> Self {
        Self {
            mode,
            key: RandomState::new(),
        }
    }

    pub fn mode(&self) -> DnsNames {
        self.mode
    }

    /// How `name` is shown; `None` when names are off.
    pub fn show(&self, name: &str) -> Option<String> {
        match self.mode {
            DnsNames::Off => None,
            DnsNames::Hash => Some(format!("hash:{:016x}", self.key.hash_one(name))),
            DnsNames::Plain => Some(name.to_owned()),
        }
    }
}

impl Default for NamePolicy {
    fn default() -> Self {
        Self::new(DnsNames::default())
    }
}

/// The list for `snapshot`, identities in label order, names most asked first, each as
/// `policy` shows it; `None` when names are off.
pub fn list(snapshot: &Snapshot, policy: &NamePolicy) -> Option<DnsNameList> {
    if policy.mode() == DnsNames::Off {
        return None;
    }
    let items = snapshot
        .dns_names
        .iter()
        .map(|(id, names)| Item {
            namespace: id.namespace.clone(),
            workload_kind: id.workload_kind.clone(),
            workload: id.workload.clone(),
            pod: id.pod.clone(),
            container: id.container.clone(),
            names: names
                .iter()
                .filter_map(|n| {
                    Some(Name {
                        name: policy.show(&n.name)?,
                        queries: n.count,
                        error: n.error,
                    })
                })
                .collect(),
        })
        .collect();
    Some(DnsNameList {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        items,
    })
}
