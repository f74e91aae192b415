//! `cargo xtask fuzz [--seconds N] [--list] [TARGET]`: the fuzz targets of
//! `collector/fuzz` and `webhook/fuzz` (cargo-fuzz, libFuzzer on the nightly), each seeded
//! with the recorded payloads in the repo, ending with one line of figures per target.
//! Corpora grow in `target/fuzz/corpus/TARGET` across runs; crashes land in
//! `target/fuzz/artifacts/TARGET/` and fail the run.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::shell;

/// cargo-fuzz, installed with `cargo install --locked` when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// One fuzz target: its crate (a workspace of its own), its name, and where its seeds are.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    /// The fuzz crate, relative to the workspace root.
    pub crate_dir: &'static str,
    /// Seed files or directories (their files, not recursive), relative to the root.
    pub seeds: &'static [&'static str],
    pub seed_kind: Seed,
}

/// How a seed file becomes a corpus entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// As it is.
    Whole,
    /// An AdmissionReview's `request.object` (other files as they are).
    ReviewObject,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "dns_message",
        crate_dir: "collector/fuzz",
        seeds: &["collector/src/dns/message/fixtures"],
        seed_kind: Seed::Whole,
    },
    Target {
        name: "tls_records",
        crate_dir: "collector/fuzz",
        // Its findings' inputs too: every run replays them first.
        seeds: &[
            "collector/src/apiserver/fixtures",
            "collector/fuzz/regressions/tls_records",
        ],
        seed_kind: Seed::Whole,
    },
    Target {
        name: "admission_body",
        crate_dir: "webhook/fuzz",
        seeds: &["webhook/demo/reviews"],
        seed_kind: Seed::Whole,
    },
    Target {
        name: "admission_object",
        crate_dir: "webhook/fuzz",
        seeds: &[
            "webhook/demo/reviews",
            "webhook/tests/fixtures/deployment-web.json",
            "webhook/tests/fixtures/job-migrate.json",
            "webhook/tests/fixtures/cronjob-report.json",
        ],
        seed_kind: Seed::ReviewObject,
    },
    Target {
        name: "check_manifests",
        crate_dir: "webhook/fuzz",
        seeds: &["webhook/tests/fixtures", "webhook/demo/reviews"],
        seed_kind: Seed::Whole,
    },
    Target {
        name: "budget",
        crate_dir: "webhook/fuzz",
        seeds: &["webhook/tests/fixtures/budget.yaml"],
        seed_kind: Seed::Whole,
    },
    Target {
        name: "apiserver_metrics",
        crate_dir: "webhook/fuzz",
        seeds: &["webhook/tests/fixtures/apf"],
        seed_kind: Seed::Whole,
    },
    Target {
        name: "profiles",
        crate_dir: "webhook/fuzz",
        seeds: &["webhook/tests/fixtures", "webhook/tests/fixtures/canary"],
        seed_kind: Seed::Whole,
    },
];

/// What one run of a target did (libFuzzer's `-print_final_stats`).
#[derive(Debug, Default)]
pub struct Figures {
    pub executions: u64,
    pub per_second: u64,
    pub corpus: usize,
    pub new_units: u64,
    pub peak_rss_mb: u64,
    pub crashed: bool,
}

pub fn list() {
    for t in TARGETS {
        println!("{}", t.name);
    }
}

pub fn run(seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    let selected: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| only.is_none_or(|o| o == t.name))
        .collect();
    if let (Some(only), true) = (only, selected.is_empty()) {
        bail!("no fuzz target `{only}`; `cargo xtask fuzz --list` lists them");
    }
    install_cargo_fuzz()?;
    let mut crates: Vec<&str> = selected.iter().map(|t| t.crate_dir).collect();
    crates.dedup();
    for dir in crates {
        let mut build = fuzz_command("build", dir);
        shell::run(&mut build)?;
    }
    let mut results = Vec::new();
    for target in &selected {
        results.push((target.name, run_target(target, seconds)?));
    }
    println!("fuzz: {seconds} s per target");
    for (name, f) in &results {
        println!(
            "fuzz {name}: {} executions, {} exec/s, corpus {}, {} new, peak RSS {} MB, {}",
            f.executions,
            f.per_second,
            f.corpus,
            f.new_units,
            f.peak_rss_mb,
            if f.crashed { "CRASHED" } else { "no findings" }
        );
    }
    let crashed: Vec<&str> = results
        .iter()
        .filter(|(_, f)| f.crashed)
        .map(|(n, _)| *n)
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets found crashes: {} (inputs in target/fuzz/artifacts/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

fn install_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have.is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let mut install = shell::cargo();
    install.args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]);
    shell::run(&mut install)
}

/// `cargo +nightly fuzz SUBCOMMAND` for the crate in `dir`, building into target/fuzz.
fn fuzz_command(subcommand: &str, dir: &str) -> Command {
    let mut cmd = shell::cargo_nightly();
    cmd.args(["fuzz", subcommand, "--fuzz-dir", dir, "--target-dir"])
        .arg(shell::target_dir().join("fuzz"));
    // `cargo xtask` runs us with xtask's package variables set; build scripts that watch
    // them (ring's) would rebuild every dependency, and a `cargo fuzz` by hand after us.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*key,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

fn run_target(target: &Target, seconds: u64) -> anyhow::Result<Figures> {
    let base = shell::target_dir().join("fuzz");
    let corpus = base.join("corpus").join(target.name);
    let artifacts = base.join("artifacts").join(target.name);
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    seed(target, &corpus)?;
    let mut cmd = fuzz_command("run", target.crate_dir);
    cmd.arg(target.name)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A slow input is a finding too; a leak of memory is one at 2 GiB.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stderr(Stdio::piped());
    eprintln!("xtask fuzz: {} for {seconds} s", target.name);
    let output = shell::output(&mut cmd)?;
    let log = String::from_utf8_lossy(&output.stderr);
    let mut figures = figures(&log);
    figures.corpus = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
    figures.crashed = !output.status.success();
    if figures.crashed {
        // The crash report is the end of libFuzzer's log.
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
    Ok(figures)
}

/// Copies the target's seeds into its corpus (`seed-` + file name; rewritten each run).
fn seed(target: &Target, corpus: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let root = shell::workspace_root();
    for seed in target.seeds {
        for file in files(&root.join(seed))? {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let bytes = match target.seed_kind {
                Seed::Whole => bytes,
                Seed::ReviewObject => review_object(&bytes).unwrap_or(bytes),
            };
            let name = file.file_name().context("seed file name")?;
            let to = corpus.join(format!("seed-{}", name.to_string_lossy()));
            std::fs::write(&to, bytes).with_context(|| format!("writing {}", to.display()))?;
        }
    }
    Ok(())
}

fn files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let entry = entry?.path();
        if entry.is_file() {
            out.push(entry);
        }
    }
    out.sort();
    Ok(out)
}

fn review_object(bytes: &[u8]) -> Option<Vec<u8>> {
    let review: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let object = review.get("request")?.get("object")?;
    serde_json::to_vec_pretty(object).ok()
}

/// Reads libFuzzer's final stats (`stat::name: value` lines).
pub fn figures(log: &str) -> Figures {
    let stat = |name: &str| {
        log.lines()
            .filter_map(|l| {
                l.strip_prefix("stat::")?
                    .strip_prefix(name)?
                    .strip_prefix(':')
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or(0)
    };
    Figures {
        executions: stat("number_of_executed_units"),
        per_second: stat("average_exec_per_sec"),
        new_units: stat("new_units_added"),
        peak_rss_mb: stat("peak_rss_mb"),
        ..Figures::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_final_stats() {
        let log = "#1024\tDONE   cov: 10 ft: 20 corp: 5/100b\n\
                   Done 1024 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 1024\n\
                   stat::average_exec_per_sec:     512\n\
                   stat::new_units_added:          7\n\
                   stat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              41\n";
        let f = figures(log);
        assert_eq!(
            (f.executions, f.per_second, f.new_units, f.peak_rss_mb),
            (1024, 512, 7, 41)
        );
    }

    #[test]
    fn targets_have_unique_names_and_existing_seeds() {
        let root = shell::workspace_root();
        for (i, t) in TARGETS.iter().enumerate() {
            assert!(TARGETS[..i].iter().all(|o| o.name != t.name), "{}", t.name);
            let manifest = std::fs::read_to_string(root.join(t.crate_dir).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("{}: {e}", t.crate_dir));
            assert!(
                manifest.contains(&format!("name = \"{}\"", t.name)),
                "{} is not a [[bin]] of {}",
                t.name,
                t.crate_dir
            );
            for seed in t.seeds {
                assert!(root.join(seed).exists(), "{}: seed {seed} missing", t.name);
            }
        }
    }
}
