//! Running commands with errors that say what failed.
use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, or `target/` of the workspace).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The cargo that runs us, so `cargo +toolchain xtask` keeps its toolchain.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Cargo of the nightly toolchain (rustfmt's unstable options, the kernel programs),
/// through rustup's proxy: the cargo that runs us does not understand `+nightly`.
pub fn cargo_nightly() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with inherited output; a non-zero exit is an error naming the command.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` capturing its output; returns it whether or not it succeeded.
pub fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.output()
        .with_context(|| format!("could not start {}", describe(cmd)))
}

pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

pub fn is_root() -> bool {
    // /proc/self/status has "Uid: real effective saved fs"; no libc needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}
