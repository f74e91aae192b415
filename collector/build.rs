//! Builds the kernel programs in `collector-ebpf` for bpfel-unknown-none (nightly,
//! build-std=core, bpf-linker with BTF) and leaves the object in OUT_DIR, where
//! `src/ebpf.rs` embeds it.
#[cfg(feature = "agent")]
use std::{path::PathBuf, process::Command};

#[cfg(feature = "agent")]
use anyhow::{Context as _, bail};

/// Without the `agent` feature (the webhook's view of this crate) there is nothing to
/// build: no kernel object is embedded.
#[cfg(not(feature = "agent"))]
fn main() {}

#[cfg(feature = "agent")]
fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .join("../collector-ebpf")
        .canonicalize()
        .context("collector-ebpf not found beside collector")?;
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("collector-ebpf path is not UTF-8")?;

    // The nested cargo would otherwise fail deep inside with a linker error.
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "bpf-linker is not installed: run `cargo xtask setup` once (it installs bpf-linker 0.13.0 built against LLVM 22)"
        );
    }

    aya_build::build_ebpf(
        [aya_build::Package {
            name: "collector-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
