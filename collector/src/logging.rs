//! The collector's logs: `tracing` to stderr, as text (default) or one JSON object per
//! line (`--log-format json`), filtered by `--log-level`, else `RUST_LOG`, else `info`.
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl LogFormat {
    /// The format a configuration file names, as the flag spells it.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(text, false).ok()
    }
}

/// Without `--log-level` or `RUST_LOG`: info, without kube-runtime's watcher warnings
/// and kube-client's per-request errors (both say it again on every retry;
/// `crate::watch` logs each change of state once, with what to do).
pub const DEFAULT_FILTER: &str =
    "info,kube_runtime::watcher=error,kube_client::client::builder=off";

/// The filter of `level` (`--log-level`, an `EnvFilter` directive such as `debug` or
/// `info,collector::watch=debug`), else `RUST_LOG`, else [`DEFAULT_FILTER`].
pub fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| e.to_string()),
        None => Ok(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        ),
    }
}

/// Installs the global subscriber; `level` was checked by the configuration.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = filter(level).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_formats_parse() {
        assert!(filter(Some("debug")).is_ok());
        assert!(filter(Some("info,collector::watch=debug")).is_ok());
        assert!(filter(Some("info,collector=notalevel")).is_err());
        assert_eq!(LogFormat::parse("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("xml"), None);
    }
}
