//! A pod's owning workload from its owner references, without reading the owners.
//!
//! The collector watches only the pods of its node (O(1) API footprint per node), so it
//! never lists ReplicaSets or Jobs. The two-level owners follow from how their
//! controllers name things instead:
//! - ReplicaSet → Deployment: the Deployment controller names a ReplicaSet
//!   `<deployment>-<pod-template-hash>` and stamps that hash on every pod it creates as
//!   the `pod-template-hash` label. A ReplicaSet owner whose name is `<x>-<that label>`
//!   is Deployment `<x>`; one without the label or suffix (a ReplicaSet made by hand)
//!   stays a ReplicaSet.
//! - Job → CronJob: the CronJob controller names a Job `<cronjob>-<scheduled time in
//!   minutes since the Unix epoch>`. A Job owner whose name ends in `-<n>` with `n` a
//!   plausible time (2015 to 2100, so a hand-made `migrate-20240101` is not taken) is
//!   CronJob `<cronjob>`; any other Job stays a Job.
//!
//! DaemonSet, StatefulSet and other controllers are the owner itself; a pod without a
//! controller reference is its own workload (`Pod`). A static pod (the kubelet's mirror
//! pod, owned by its Node and named `<manifest>-<node>`) is workload `Pod` `<manifest>`,
//! so `kube-apiserver` on every control-plane node is one workload.

/// `pod-template-hash`, set by the Deployment controller on its ReplicaSets' pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Minutes since the epoch at 2015-01-01 and 2100-01-01: the range of CronJob suffixes.
const CRONJOB_MINUTES: std::ops::RangeInclusive<u64> = 23_667_840..=68_374_080;

/// A pod's owning workload: the top of its controller chain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub kind: String,
    pub name: String,
}

impl Workload {
    fn new(kind: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
        }
    }
}

/// One owner reference, reduced to what naming needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub controller: bool,
}

/// The workload of pod `pod_name` given its owner references and its
/// `pod-template-hash` label.
pub fn resolve(pod_name: &str, owners: &[Owner<'_>], pod_template_hash: Option<&str>) -> Workload {
    // The controller reference is the one that counts; older objects may lack the flag.
    let Some(owner) = owners
        .iter()
        .find(|o| o.controller)
        .or_else(|| owners.first())
    else {
        return Workload::new("Pod", pod_name);
    };
    match owner.kind {
        "ReplicaSet" => match pod_template_hash
            .filter(|hash| !hash.is_empty())
            .and_then(|hash| owner.name.strip_suffix(hash)?.strip_suffix('-'))
        {
            Some(deployment) if !deployment.is_empty() => Workload::new("Deployment", deployment),
            _ => Workload::new("ReplicaSet", owner.name),
        },
        "Job" => match owner.name.rsplit_once('-') {
            Some((cronjob, minutes))
                if !cronjob.is_empty()
                    && minutes.bytes().all(|b| b.is_ascii_digit())
                    && minutes
                        .parse::<u64>()
                        .is_ok_and(|m| CRONJOB_MINUTES.contains(&m)) =>
            {
                Workload::new("CronJob", cronjob)
            }
            _ => Workload::new("Job", owner.name),
        },
        "Node" => Workload::new(
            "Pod",
            pod_name
                .strip_suffix(owner.name)
                .and_then(|p| p.strip_suffix('-'))
                .filter(|p| !p.is_empty())
                .unwrap_or(pod_name),
        ),
        kind => Workload::new(kind, owner.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller<'a>(kind: &'a str, name: &'a str) -> Owner<'a> {
        Owner {
            kind,
            name,
            controller: true,
        }
    }

    #[test]
    fn deployment_through_its_replicaset() {
        let owners = [controller("ReplicaSet", "web-7d9c8b6f5d")];
        assert_eq!(
            resolve("web-7d9c8b6f5d-x2x4k", &owners, Some("7d9c8b6f5d")),
            Workload::new("Deployment", "web")
        );
    }

    #[test]
    fn deployment_name_with_dashes() {
        let owners = [controller("ReplicaSet", "kube-state-metrics-6f8c9b7d4")];
        assert_eq!(
            resolve(
                "kube-state-metrics-6f8c9b7d4-abcde",
                &owners,
                Some("6f8c9b7d4")
            ),
            Workload::new("Deployment", "kube-state-metrics")
        );
    }

    #[test]
    fn bare_replicaset_stays_replicaset() {
        let owners = [controller("ReplicaSet", "frontend")];
        assert_eq!(
            resolve("frontend-9zq2l", &owners, None),
            Workload::new("ReplicaSet", "frontend")
        );
        // A hash label that is not the name's suffix does not make a Deployment.
        assert_eq!(
            resolve("frontend-9zq2l", &owners, Some("6f8c9b7d4")),
            Workload::new("ReplicaSet", "frontend")
        );
    }

    #[test]
    fn daemonset_and_statefulset_are_the_owner() {
        assert_eq!(
            resolve("agent-7xk2p", &[controller("DaemonSet", "agent")], None),
            Workload::new("DaemonSet", "agent")
        );
        assert_eq!(
            resolve("db-0", &[controller("StatefulSet", "db")], None),
            Workload::new("StatefulSet", "db")
        );
    }

    #[test]
    fn cronjob_through_its_job() {
        // 29_000_000 minutes after the epoch is in 2025.
        let owners = [controller("Job", "backup-29000000")];
        assert_eq!(
            resolve("backup-29000000-q8m2d", &owners, None),
            Workload::new("CronJob", "backup")
        );
    }

    #[test]
    fn plain_job_stays_job() {
        for name in [
            "migrate",
            "migrate-20240101",
            "migrate-v2",
            "pi-1",
            "-29000000",
        ] {
            assert_eq!(
                resolve("p", &[controller("Job", name)], None),
                Workload::new("Job", name),
                "{name}"
            );
        }
    }

    #[test]
    fn bare_pod_is_its_own_workload() {
        assert_eq!(resolve("debug", &[], None), Workload::new("Pod", "debug"));
    }

    #[test]
    fn controller_reference_wins_over_others() {
        let owners = [
            Owner {
                kind: "ConfigMap",
                name: "lock",
                controller: false,
            },
            controller("StatefulSet", "db"),
        ];
        assert_eq!(
            resolve("db-1", &owners, None),
            Workload::new("StatefulSet", "db")
        );
    }

    #[test]
    fn static_pod_owned_by_its_node() {
        // Mirror pods of static manifests are owned by the Node.
        let owners = [controller("Node", "node-a")];
        assert_eq!(
            resolve("kube-apiserver-node-a", &owners, None),
            Workload::new("Pod", "kube-apiserver")
        );
    }
}
