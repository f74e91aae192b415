//! Naming cgroups: container id from the cgroup path, then pod and owning workload.
