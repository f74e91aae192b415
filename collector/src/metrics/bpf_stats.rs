//! Per-program run count and run time from the kernel's BPF stats.
//!
//! The kernel counts runs and run time only while someone holds a `BPF_ENABLE_STATS`
//! file descriptor (it costs two clock reads per run, so it is off by default); keep
//! the [`RunTimeStats`] guard alive for as long as the numbers should move.
use std::{collections::BTreeMap, os::fd::OwnedFd};

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
