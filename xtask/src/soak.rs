//! `cargo xtask soak [--minutes N] [webhook|collector]` (not in CI): the long-running
//! figures. The webhook at 500 reviews/s over HTTPS/HTTP2, then the collector under
//! dnsperf at 20,000 queries/s plus kubectl traffic (needs root; take the shared kernel
//! lock around it on a shared machine). Each prints a table per minute.
use anyhow::bail;

use crate::shell;

/// The soak benches: (package, bench, needs root).
const SOAKS: &[(&str, &str, bool)] = &[("webhook", "soak", false), ("collector", "soak", true)];

pub fn run(minutes: u32, only: Option<&str>) -> anyhow::Result<()> {
    let chosen: Vec<_> = SOAKS
        .iter()
        .filter(|(package, ..)| only.is_none_or(|o| o == *package))
        .collect();
    if chosen.is_empty() {
        bail!("no soak named {only:?}: choose webhook or collector");
    }
    for (package, bench, root) in chosen {
        if *root && !shell::is_root() {
            bail!("the {package} soak loads eBPF programs: run `sudo -E cargo xtask soak`");
        }
        println!("\n# {package}: {minutes} min soak");
        shell::run(
            shell::cargo()
                .args(["bench", "--locked", "-p", package, "--bench", bench])
                .env("HEADROOM_SOAK_MINUTES", minutes.to_string()),
        )?;
    }
    Ok(())
}
