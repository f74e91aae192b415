//! Files the running webhook re-reads when they change: the budget, the node inventory and
//! the TLS certificate. A new version that does not load leaves the old one in use; the
//! failure is logged and counted (`headroom_webhook_reload_errors_total{file}`) once per
//! change of the file, not once per look.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    admission::{Budget, State},
    budget::ControlPlaneBudget,
    inventory::Inventory,
    tls::ReloadingCert,
};

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Calls `reload` with `path` every `every` when the file's modification time or length
/// changed since the last look.
fn watch_file(path: PathBuf, every: Duration, reload: impl Fn(&Path) + Send + 'static) {
    tokio::spawn(async move {
        let mut last = file_stamp(&path);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = file_stamp(&path);
            if now != last {
                last = now;
                reload(&path);
            }
        }
    });
}

/// Re-reads the budget file when it changes.
pub fn budget_file(state: Arc<State>, path: PathBuf, every: Duration) {
    watch_file(path, every, move |path| {
        match ControlPlaneBudget::load(path) {
            Ok(budget) => {
                tracing::info!(path = %path.display(), "budget reloaded");
                state.set_budget(Budget::from(budget));
            }
            Err(e) => {
                state.metrics.record_reload_error("budget");
                tracing::error!(error = %e, "budget reload failed; the old budget keeps deciding");
            }
        }
    });
}

/// Re-reads the node inventory file when it changes.
pub fn nodes_file(state: Arc<State>, path: PathBuf, every: Duration) {
    watch_file(path, every, move |path| {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                Inventory::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(inventory) => {
                tracing::info!(nodes = inventory.total(), "node inventory reloaded");
                state.set_inventory(inventory);
            }
            Err(e) => {
                state.metrics.record_reload_error("nodes");
                tracing::error!(error = %e, "nodes file reload failed; keeping the old inventory");
            }
        }
    });
}

/// Re-reads the certificate and key when either changes.
pub fn certificate(state: Arc<State>, cert: Arc<ReloadingCert>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match cert.reload_if_changed() {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    state.metrics.record_reload_error("certificate");
                    tracing::error!(
                        error = %e,
                        "TLS reload failed; the old certificate keeps serving"
                    );
                }
            }
        }
    });
}
