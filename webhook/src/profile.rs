//! The reading side of the profile contract (`docs/profiles.md`): the merged in-memory
//! snapshot the admission path reads. The document types are the collector's own
//! ([`collector::schema::profiles`]): one definition, strict on both sides.

use std::{
    collections::{BTreeMap, HashMap},
    time::SystemTime,
};

pub use collector::schema::profiles::{
    API_VERSION, KIND, ProfileError, ProfileItem, ProfileList, WorkloadRef,
};

use crate::load::Load;

/// An RFC 3339 time (`generatedAt`), `None` if it is not one.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let t: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(t))
}

/// What one pod costs, with where the figure came from.
#[derive(Clone, Debug, PartialEq)]
pub struct PerPod {
    pub steady: Load,
    pub startup: Load,
    pub provenance: Provenance,
    /// How long the measurement behind it ran (`None`: declared, not measured).
    pub measured_seconds: Option<u64>,
}

impl PerPod {
    /// Seconds until a measured figure covers `min_seconds`; `None` once it does (or for
    /// a declared one).
    pub fn seconds_until_measured(&self, min_seconds: u64) -> Option<u64> {
        self.measured_seconds
            .filter(|&m| m < min_seconds)
            .map(|m| min_seconds - m)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Provenance {
    /// Measured for this workload.
    Measured { pods: u64, minutes: u64 },
    /// Measured for another workload running the same image.
    Image {
        image: String,
        from: WorkloadRef,
        pods: u64,
        minutes: u64,
    },
    /// Declared by the workload's annotation, trusted by the budget.
    Declared,
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provenance::Measured { pods, minutes } => {
                write!(f, "measured over {pods} pods, {minutes} min")
            }
            Provenance::Image {
                image,
                from,
                pods,
                minutes,
            } => write!(
                f,
                "image {image} as measured for {from} over {pods} pods, {minutes} min"
            ),
            Provenance::Declared => f.write_str("declared by annotation"),
        }
    }
}

/// Every source's profiles merged: the cluster total and per-workload figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub totals: Load,
    pub workloads: HashMap<WorkloadRef, ProfileItem>,
    /// Image → the workload measured with the most pods running it.
    pub images: HashMap<String, WorkloadRef>,
    /// Per node whose data is in hand (a collector's `node`, Prometheus' `instance`), the
    /// time of its newest measurement. `None`: the data does not say which nodes it
    /// covers, and coverage is not judged (built by hand, as in tests).
    pub nodes: Option<BTreeMap<String, SystemTime>>,
    /// Why the data is missing where the source must have some (an empty answer from
    /// Prometheus is missing data, not zero load).
    pub missing: Option<String>,
}

impl Snapshot {
    /// Merges lists from several collectors (one per node): totals and current shares add
    /// up; per-pod figures take the larger value (each is already a p95 over pods); pods add
    /// up; minutes take the longest.
    pub fn merge<'a>(lists: impl IntoIterator<Item = &'a ProfileList>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let mut nodes = BTreeMap::new();
        for list in lists {
            // Validated lists have an RFC 3339 time; anything else counts as long ago.
            let at = parse_time(&list.generated_at).unwrap_or(SystemTime::UNIX_EPOCH);
            let newest: &mut SystemTime = nodes.entry(list.node.clone()).or_insert(at);
            *newest = (*newest).max(at);
            snapshot.totals += list.totals;
            for item in &list.items {
                snapshot
                    .workloads
                    .entry(item.workload.clone())
                    .and_modify(|merged| {
                        merged.pods += item.pods;
                        merged.minutes = merged.minutes.max(item.minutes);
                        merged.measured_seconds =
                            merged.measured_seconds.max(item.measured_seconds);
                        merged.steady = merged.steady.max(item.steady);
                        merged.startup = merged.startup.max(item.startup);
                        merged.current += item.current;
                        if merged.image.is_empty() {
                            merged.image.clone_from(&item.image);
                        }
                    })
                    .or_insert_with(|| item.clone());
            }
        }
        snapshot.nodes = Some(nodes);
        snapshot.index_images();
        snapshot
    }

    /// The time of the newest measurement in the data, if it says.
    pub fn measured_at(&self) -> Option<SystemTime> {
        self.nodes.as_ref()?.values().max().copied()
    }

    /// Rebuilds the image index; called after the workload map changes.
    pub fn index_images(&mut self) {
        let mut images: HashMap<String, WorkloadRef> = HashMap::new();
        let mut sorted: Vec<&ProfileItem> = self.workloads.values().collect();
        // Deterministic choice: most pods, then smallest name.
        sorted.sort_by(|a, b| b.pods.cmp(&a.pods).then(a.workload.cmp(&b.workload)));
        for item in sorted {
            if !item.image.is_empty() && item.pods > 0 {
                images
                    .entry(item.image.clone())
                    .or_insert_with(|| item.workload.clone());
            }
        }
        self.images = images;
    }

    /// The per-pod figure for a workload: its own measurement, else another workload's with
    /// the same image, else `None` (unmeasured).
    pub fn per_pod(&self, workload: &WorkloadRef, image: Option<&str>) -> Option<PerPod> {
        if let Some(item) = self.workloads.get(workload).filter(|i| i.pods > 0) {
            return Some(PerPod {
                steady: item.steady,
                startup: item.startup,
                provenance: Provenance::Measured {
                    pods: item.pods,
                    minutes: item.minutes,
                },
                measured_seconds: Some(item.measured_seconds),
            });
        }
        let image = image.filter(|i| !i.is_empty())?;
        let from = self.images.get(image)?;
        let item = self.workloads.get(from)?;
        Some(PerPod {
            steady: item.steady,
            startup: item.startup,
            provenance: Provenance::Image {
                image: image.to_owned(),
                from: from.clone(),
                pods: item.pods,
                minutes: item.minutes,
            },
            measured_seconds: Some(item.measured_seconds),
        })
    }

    /// This workload's present share of the total.
    pub fn current_share(&self, workload: &WorkloadRef) -> Load {
        self.workloads
            .get(workload)
            .map(|i| i.current)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
