//! End-to-end tests of the collector against a real kube-apiserver (1.20, started by
//! `cargo xtask e2e`, which runs these with `--ignored` as root). The collector runs in
//! cluster mode (`--kubeconfig`, `--node-name`) and attaches at the root cgroup.
mod least_privilege;
mod requests;
#[path = "../../../webhook/tests/e2e/support.rs"]
#[expect(
    dead_code,
    reason = "shared with the webhook's e2e tests, which use all of it"
)]
mod support;
