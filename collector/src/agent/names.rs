//! Naming a (cgroup, process): a pod's container from the node's pod cache when the
//! cgroup is a pod's, else a node process by its systemd unit, cgroup or command name.
//! Names are worked out again every tick, so a pod whose first traffic came before its
//! Pod object gets its name as soon as the watch delivers it.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use crate::{
    cgroup,
    identity::{self, CgroupOwner, PodIndex, PodInfo, cgroup_path},
    ids::IdMap,
    metrics::Identity,
};

/// Bound on remembered process names; cleared when reached (they are re-learnt).
pub const MAX_COMMS: usize = 4096;

/// Who a cgroup's traffic belongs to at one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub identity: Identity,
    /// The uid of its pod when the pod cache knows the pod.
    pub pod_uid: Option<String>,
}

/// Where a cgroup is, as far as the walk that looked for it could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// Its path, relative to the cgroup root.
    At(String),
    /// Not in the hierarchy when first looked for: gone before it could be named.
    Gone,
    /// Not found by a walk that could not read every directory: it may be there.
    Unknown,
}

/// Names cgroups and remembers what it needs to: cgroup paths (read once per cgroup,
/// since a removed cgroup has none) and process names, each for as long as the caller
/// keeps them (see [`Names::prune`]).
#[derive(Debug)]
pub struct Names {
    root: PathBuf,
    pub(super) paths: IdMap<u64, Place>,
    pub(super) comms: HashMap<u32, String>,
    /// Cgroups first seen in events and not named yet: named at the next
    /// [`Names::name_new`], well before the next snapshot, so that a short-lived pod's
    /// container is still there to be found.
    new: HashSet<u64>,
}

impl Names {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.into(),
            paths: IdMap::default(),
            comms: HashMap::new(),
            new: HashSet::new(),
        }
    }

    /// Remembers the name of process `tgid`: its executable's name in full, never a
    /// thread's. The kernel's comm is the sending *thread's*, cut to 15 bytes (dig sends
    /// from `isc-net-0000`), so the executable from /proc wins while the process is
    /// alive, then the one the exec tracepoint recorded (`exec_path`, asked only when
    /// /proc has none: a short-lived process is often gone before it is named), then
    /// the main thread's comm, and the sending thread's comm only when nothing else is
    /// known.
    pub fn learn_comm(
        &mut self,
        tgid: u32,
        comm: &[u8; 16],
        exec_path: impl FnOnce() -> Option<String>,
    ) {
        if tgid == 0 || self.comms.contains_key(&tgid) {
            return;
        }
        let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        let name = proc_executable(tgid)
            .or_else(|| exec_path().as_deref().and_then(executable_name))
            .or_else(|| {
                std::fs::read_to_string(format!("/proc/{tgid}/comm"))
                    .ok()
                    .map(|c| c.trim_end().to_string())
                    .filter(|c| !c.is_empty())
            })
            .or_else(|| (len > 0).then(|| String::from_utf8_lossy(&comm[..len]).into_owned()));
        let Some(name) = name else {
            return;
        };
        if self.comms.len() >= MAX_COMMS {
            self.comms.clear();
        }
        self.comms.insert(tgid, name);
    }

    /// Remembers the path of a cgroup (for tests and callers that know it already).
    pub fn learn_path(&mut self, cgroup_id: u64, path: Option<String>) {
        self.paths
            .insert(cgroup_id, path.map_or(Place::Gone, Place::At));
    }

    /// The path of a cgroup, when it was found.
    pub fn path(&self, cgroup_id: u64) -> Option<&str> {
        match self.paths.get(&cgroup_id)? {
            Place::At(path) => Some(path),
            Place::Gone | Place::Unknown => None,
        }
    }

    /// Whether the cgroup's path was read already (found, gone, or looked for).
    pub fn is_known(&self, cgroup_id: u64) -> bool {
        self.paths.contains_key(&cgroup_id)
    }

    /// Notes a cgroup seen in an event, to be named soon if it is new.
    pub fn note(&mut self, cgroup_id: u64) {
        if !self.paths.contains_key(&cgroup_id) {
            self.new.insert(cgroup_id);
        }
    }

    /// Names the cgroups noted since the last call (one walk of the hierarchy for all).
    pub fn name_new(&mut self) {
        self.resolve(std::iter::empty());
    }

    /// Reads the paths of the cgroups among `ids` (and those noted) not known yet, in one
    /// walk of the hierarchy. A cgroup not found is gone for good; when the walk could
    /// not read everything it is unknown instead (named by id, never taken for gone),
    /// and looked for again next time.
    pub fn resolve(&mut self, ids: impl IntoIterator<Item = u64>) {
        let mut unknown = std::mem::take(&mut self.new);
        unknown.extend(ids);
        unknown.retain(|id| !matches!(self.paths.get(id), Some(Place::At(_) | Place::Gone)));
        if unknown.is_empty() {
            return;
        }
        let mut walk = cgroup::paths_of(&self.root, &unknown);
        for id in unknown {
            let place = match walk.paths.remove(&id) {
                Some(path) => Place::At(path.display().to_string()),
                None if walk.complete => Place::Gone,
                None => Place::Unknown,
            };
            self.paths.insert(id, place);
        }
    }

    /// Whether cgroup `cgroup_id` is still there: one stat of its path. Not found when
    /// first looked for, it was gone before it could be named; where that is not sure
    /// (or it was never looked for), it is taken as there.
    pub fn exists(&self, cgroup_id: u64) -> bool {
        match self.paths.get(&cgroup_id) {
            Some(Place::At(path)) => cgroup::exists_at(&self.root, path, cgroup_id),
            Some(Place::Gone) => false,
            Some(Place::Unknown) | None => true,
        }
    }

    /// Forgets the paths of cgroups for which `keep_path` is false and the names of
    /// processes for which `keep_comm` is false (nothing refers to them any more).
    pub fn prune(&mut self, keep_path: impl Fn(u64) -> bool, keep_comm: impl Fn(u32) -> bool) {
        self.paths.retain(|&id, _| keep_path(id));
        self.comms.retain(|&tgid, _| keep_comm(tgid));
    }

    /// Names `(cgroup_id, tgid)` with `pods` as they are now, from the path
    /// [`Names::resolve`] found (a cgroup not looked for is named by its id).
    pub fn name(&self, cgroup_id: u64, tgid: u32, pods: &PodIndex) -> Named {
        let comm = self.comms.get(&tgid).map(String::as_str);
        name(self.path(cgroup_id), comm, cgroup_id, pods)
    }

    /// The identity of `(cgroup_id, tgid)`; see [`Names::name`].
    pub fn identity(&self, cgroup_id: u64, tgid: u32, pods: &PodIndex) -> Identity {
        self.name(cgroup_id, tgid, pods).identity
    }

    /// The known cgroups of `gone` pods (swept from the pod cache after their grace
    /// period), whose series end now.
    pub fn cgroups_of_pods(&self, gone: &[PodInfo]) -> Vec<u64> {
        let known = self.paths.iter().filter_map(|(&id, place)| match place {
            Place::At(path) => Some((id, path.as_str())),
            Place::Gone | Place::Unknown => None,
        });
        cgroups_of_pods(known, gone)
    }
}

/// The executable's name of live process `tgid`, from /proc (none for kernel threads).
fn proc_executable(tgid: u32) -> Option<String> {
    let path = std::fs::read_link(format!("/proc/{tgid}/exe")).ok()?;
    executable_name(path.to_str()?)
}

/// The last component of an executable's path, as /proc or the exec tracepoint give
/// it (`/usr/bin/dig` → `dig`; a replaced binary's ` (deleted)` suffix dropped).
pub fn executable_name(path: &str) -> Option<String> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let name = path.rsplit('/').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// Names a cgroup at `path` (relative to the cgroup root; `None` when it was gone
/// before it could be read). A pod's cgroup is named from `pods` (degrading to the
/// pod uid while its Pod object is unknown); anything else is a node process.
pub fn name(path: Option<&str>, comm: Option<&str>, cgroup_id: u64, pods: &PodIndex) -> Named {
    if let Some(owner) = path.map(cgroup_path::parse)
        && pod_uid(&owner).is_some()
    {
        return Named {
            identity: identity::identify(&owner, comm.unwrap_or_default(), pods),
            pod_uid: identity::pod_of(&owner, pods).map(|p| p.uid.clone()),
        };
    }
    Named {
        identity: node_identity(path, comm, cgroup_id),
        pod_uid: None,
    }
}

/// The pod a cgroup path places its owner in, if any.
fn pod_uid(owner: &CgroupOwner) -> Option<&str> {
    match owner {
        CgroupOwner::Container { pod_uid, .. } => pod_uid.as_deref(),
        CgroupOwner::Pod { uid, .. } => Some(uid),
        CgroupOwner::Node { .. } => None,
    }
}

/// Which of the cgroups (id, path) belong to one of the `gone` pods: by the pod uid in
/// the path, or by a container id the pod reported.
pub fn cgroups_of_pods<'a>(
    cgroups: impl IntoIterator<Item = (u64, &'a str)>,
    gone: &[PodInfo],
) -> Vec<u64> {
    if gone.is_empty() {
        return Vec::new();
    }
    let uids: HashSet<&str> = gone.iter().map(|p| p.uid.as_str()).collect();
    let containers: HashSet<&str> = gone
        .iter()
        .flat_map(|p| p.containers.iter().filter_map(|c| c.id.as_deref()))
        .collect();
    let mut ids: Vec<u64> = cgroups
        .into_iter()
        .filter(|(_, path)| {
            let owner = cgroup_path::parse(path);
            let by_container = matches!(&owner, CgroupOwner::Container { id, .. } if containers.contains(id.as_str()));
            by_container || pod_uid(&owner).is_some_and(|uid| uids.contains(uid))
        })
        .map(|(id, _)| id)
        .collect();
    ids.sort_unstable();
    ids
}

/// The identity of a node process from its cgroup path (relative to the root, starting
/// with `/`) and command name.
pub fn node_identity(path: Option<&str>, comm: Option<&str>, cgroup_id: u64) -> Identity {
    let leaf = path.and_then(|p| p.rsplit('/').find(|s| !s.is_empty()));
    let name = match leaf {
        Some(unit) if unit.ends_with(".service") => unit.trim_end_matches(".service").to_string(),
        Some(scope) if scope.ends_with(".scope") => comm.unwrap_or(scope).to_string(),
        Some(group) => group.to_string(),
        None => match (path, comm) {
            (Some(_), Some(comm)) => comm.to_string(), // the root cgroup
            (Some(_), None) => "unknown".into(),
            (None, _) => format!("cgroup-{cgroup_id}"), // gone before it was named
        },
    };
    Identity::node_process(name)
}
