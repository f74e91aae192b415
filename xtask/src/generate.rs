//! `cargo xtask gen`: writes the generated files into deploy/. A test in each crate fails
//! when a committed file differs from what this would write.
use std::process::Stdio;

use anyhow::{Context as _, bail};

use crate::shell;

/// (path under the workspace, cargo arguments of the command printing it)
const GENERATED: &[(&str, &[&str])] = &[(
    "deploy/crd/controlplanebudget.yaml",
    &[
        "run",
        "--quiet",
        "--locked",
        "-p",
        "webhook",
        "--bin",
        "headroom-webhook",
        "--",
        "crd",
    ],
)];

pub fn run() -> anyhow::Result<()> {
    for (path, args) in GENERATED {
        let mut cmd = shell::cargo();
        cmd.args(*args).stderr(Stdio::inherit());
        let out = shell::output(&mut cmd)?;
        if !out.status.success() {
            bail!("{} failed ({})", shell::describe(&cmd), out.status);
        }
        let target = shell::workspace_root().join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let unchanged = std::fs::read(&target).is_ok_and(|old| old == out.stdout);
        if !unchanged {
            std::fs::write(&target, &out.stdout).with_context(|| format!("writing {path}"))?;
        }
        eprintln!(
            "xtask gen: {path} {}",
            if unchanged { "unchanged" } else { "written" }
        );
    }
    Ok(())
}
