//! `cargo xtask bench`: the benchmarks, each printing a table with ratios against a
//! baseline measured in the same run. Needs root (the collector's loads eBPF programs).
use anyhow::bail;

use crate::{setup, shell};

const BENCHES: &[(&str, &str)] = &[("collector", "overhead"), ("webhook", "admission")];

pub fn run() -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!("the collector benchmark loads eBPF programs: run `sudo -E cargo xtask bench`");
    }
    setup::run()?;
    for (package, bench) in BENCHES {
        println!("\n# {package}: {bench}");
        shell::run(shell::cargo().args(["bench", "--locked", "-p", package, "--bench", bench]))?;
    }
    Ok(())
}
