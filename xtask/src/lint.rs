//! `cargo xtask lint`: the checks anyone can run — rustfmt, and clippy with warnings
//! denied for user space and, in its own pass, for the kernel programs.
use crate::{setup, shell};

pub fn run() -> anyhow::Result<()> {
    // collector's build script builds the kernel programs: it needs bpf-linker.
    if shell::is_root() {
        setup::run()?;
    }
    shell::run(shell::cargo_nightly().args(["fmt", "--all", "--check"]))?;
    shell::run(shell::cargo().args([
        "clippy",
        "--locked",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The collector as the webhook builds it: its shared parts without the agent.
    shell::run(shell::cargo().args([
        "clippy",
        "--locked",
        "-p",
        "collector",
        "--lib",
        "--no-default-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    let mut ebpf = shell::cargo_nightly();
    ebpf.current_dir(shell::workspace_root().join("collector-ebpf"))
        .args([
            "clippy",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--bins",
            "--release",
            "--",
            "-D",
            "warnings",
        ]);
    shell::run(&mut ebpf)?;
    eprintln!("xtask lint: clean");
    Ok(())
}
