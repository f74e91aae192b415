//! End-to-end tests against a real kube-apiserver (1.20, built by `cargo xtask e2e`, which
//! runs these with `--ignored` and the control plane's coordinates in the environment).
//! Each asserts against what the server recorded: its objects or its audit log.
mod admission;
mod auto;
mod deploy;
mod fail_safe;
mod least_privilege;
mod support;
#[path = "../support/mod.rs"]
mod test_pki;
mod webhook;
