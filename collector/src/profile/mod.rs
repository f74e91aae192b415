//! Profiles: what one pod of a workload costs, per dimension (schema in docs/profiles.md).
