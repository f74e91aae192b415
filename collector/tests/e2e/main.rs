//! End-to-end tests of the collector against a real kube-apiserver (1.20, started by
//! `cargo xtask e2e`, which runs these with `--ignored` as root). The collector runs in
//! cluster mode (`--kubeconfig`, `--node-name`) and attaches at the root cgroup.
mod least_privilege;
mod requests;
mod support;
