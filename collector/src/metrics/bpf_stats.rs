//! Per-program run count and run time from the kernel's BPF stats.
//!
//! The kernel counts runs and run time only while someone holds a `BPF_ENABLE_STATS`
//! file descriptor; keep the [`RunTimeStats`] guard alive for as long as the numbers
//! should move. It costs two clock reads per run of *every* BPF program on the node
//! (a CNI's datapath included, not only the collector's), so by default the collector
//! turns it on for 5 s of every minute ([`ProgramStats::Sampled`], [`Sampling`]) and
//! counts the seconds it was on ([`StatsClock`]).
use std::{
    collections::BTreeMap,
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{ProgramError, ProgramInfo},
    sys::{Stats, enable_stats},
};

use super::ProgramRuns;
use crate::error::{Error, Result};

/// Keeps the kernel's run-time stats on; dropping it turns them off (unless another
/// process holds them on too).
#[derive(Debug)]
pub struct RunTimeStats {
    _fd: OwnedFd,
}

/// Turns on the kernel's run-time stats. Needs CAP_SYS_ADMIN; without it the
/// collector works, but `headroom_collector_program_run*` stay at zero.
pub fn enable_run_time_stats() -> Result<RunTimeStats> {
    enable_stats(Stats::RunTime)
        .map(|fd| RunTimeStats { _fd: fd })
        .map_err(|source| Error::BpfStats { source })
}

/// When the kernel's run-time stats are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgramStats {
    /// On for the last [`Sampling::on`] of every [`Sampling::every`]: run time per run
    /// is exact, runs per second are the runs over the seconds sampled.
    #[default]
    Sampled,
    /// On all the time (every BPF program on the node pays the clock reads).
    Always,
    /// Never: the per-program metrics stay at zero.
    Off,
}

impl ProgramStats {
    /// The mode a configuration file names, as the flag spells it.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(text, false).ok()
    }

    /// The modes, for an error message: "sampled, always or off".
    pub fn names() -> String {
        let names: Vec<String> = <Self as clap::ValueEnum>::value_variants()
            .iter()
            .filter_map(clap::ValueEnum::to_possible_value)
            .map(|value| value.get_name().to_owned())
            .collect();
        match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// How long each sample of the run-time stats lasts (`on`), and how often one starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    pub on: Duration,
    pub every: Duration,
}

impl Sampling {
    /// 5 s of every minute: at least five samples in a 5-minute `rate()`, at 1/12 of
    /// the cost of leaving the stats on.
    pub const DEFAULT: Self = Self {
        on: Duration::from_secs(5),
        every: Duration::from_secs(60),
    };
}

/// The time the run-time stats have been on (as this process turned them on), shared
/// between the task that turns them on and off and the snapshot.
#[derive(Clone, Debug, Default)]
pub struct StatsClock(Arc<Mutex<ClockState>>);

#[derive(Debug, Default)]
struct ClockState {
    done: Duration,
    on_since: Option<Instant>,
}

impl StatsClock {
    /// Seconds on so far, the current stretch included.
    pub fn seconds(&self) -> f64 {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let current = state.on_since.map_or(Duration::ZERO, |t| t.elapsed());
        (state.done + current).as_secs_f64()
    }

    fn set_on(&self, on: bool) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (on, state.on_since) {
            (true, None) => state.on_since = Some(Instant::now()),
            (false, Some(since)) => {
                state.done += since.elapsed();
                state.on_since = None;
            }
            _ => {}
        }
    }
}

/// Turns the run-time stats on and off as `mode` says, for as long as the future runs
/// (dropping it turns them off). If they cannot be turned on (no CAP_SYS_ADMIN), warns
/// once and leaves them off: the collector measures without them.
pub async fn run(mode: ProgramStats, sampling: Sampling, clock: StatsClock) {
    let enable = || {
        enable_run_time_stats()
            .inspect_err(|e| tracing::warn!("{e}"))
            .ok()
    };
    // Holds the stats on and marks the clock off when dropped, so that cancelling the
    // future stops both.
    struct On<'a> {
        clock: &'a StatsClock,
        _stats: RunTimeStats,
    }
    impl Drop for On<'_> {
        fn drop(&mut self) {
            self.clock.set_on(false);
        }
    }
    let on = |stats| {
        clock.set_on(true);
        On {
            clock: &clock,
            _stats: stats,
        }
    };
    match mode {
        ProgramStats::Off => {}
        ProgramStats::Always => {
            if let Some(stats) = enable() {
                let _on = on(stats);
                std::future::pending::<()>().await;
            }
        }
        // Each period ends with its sample, so a collector that restarts often (or a
        // benchmark run shorter than a period) does not run with the stats on.
        ProgramStats::Sampled => loop {
            tokio::time::sleep(sampling.every.saturating_sub(sampling.on)).await;
            let Some(stats) = enable() else { return };
            let _on = on(stats);
            tokio::time::sleep(sampling.on).await;
        },
    }
}

/// Run count and time of one program, from its [`ProgramInfo`].
pub fn runs_of(info: &ProgramInfo) -> ProgramRuns {
    ProgramRuns {
        run_count: info.run_count(),
        run_time: info.run_time(),
    }
}

/// Run count and time of every loaded program in `ebpf`, by program name (the full
/// name from the object, not the kernel's 15-character copy). Programs not loaded are
/// left out.
pub fn program_runs(ebpf: &Ebpf) -> Result<BTreeMap<String, ProgramRuns>> {
    let mut out = BTreeMap::new();
    for (name, program) in ebpf.programs() {
        match program.info() {
            Ok(info) => {
                out.insert(name.to_owned(), runs_of(&info));
            }
            Err(ProgramError::NotLoaded) => {}
            Err(source) => {
                return Err(Error::ProgramInfo {
                    name: name.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(out)
}
