//! Where profile data comes from: a file, collectors' `/profiles` endpoints, or the
//! Prometheus HTTP API. Fetching runs in the background; the admission path only reads the
//! resulting in-memory [`Snapshot`].

pub mod apiserver;
pub mod apiserver_prometheus;
pub mod prometheus;

use std::{path::PathBuf, time::Duration};

use crate::{
    error::Error,
    profile::{ProfileList, Snapshot},
};

/// Timeout of one HTTP fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A `ProfileList` JSON file (standalone use, demos).
    File(PathBuf),
    /// Collector base URLs; each one's `/profiles` is fetched and the lists merged.
    Collectors(Vec<String>),
    /// A Prometheus base URL with Headroom's recording rules.
    Prometheus(String),
}

impl Source {
    /// The `source` label of the refresh-error metric.
    pub fn label(&self) -> &'static str {
        match self {
            Source::File(_) => "file",
            Source::Collectors(_) => "collector",
            Source::Prometheus(_) => "prometheus",
        }
    }

    pub async fn fetch(&self) -> Result<Snapshot, Error> {
        match self {
            Source::File(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                let list = ProfileList::parse(&path.display().to_string(), &bytes)?;
                Ok(Snapshot::merge([&list]))
            }
            Source::Collectors(urls) => fetch_collectors(urls).await,
            Source::Prometheus(url) => prometheus::fetch(url).await,
        }
    }
}

/// `base` + `/profiles`, tolerating a trailing slash or a full `/profiles` URL.
pub fn profiles_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/profiles") {
        base.to_owned()
    } else {
        format!("{base}/profiles")
    }
}

/// Fetches every collector concurrently. A collector that fails is left out (and logged);
/// if all fail, the first error is returned and the previous snapshot ages towards stale.
async fn fetch_collectors(urls: &[String]) -> Result<Snapshot, Error> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, base) in urls.iter().enumerate() {
        let url = profiles_url(base);
        tasks.spawn(async move {
            let result = crate::http_client::get(&url, FETCH_TIMEOUT)
                .await
                .and_then(|body| Ok(ProfileList::parse(&url, &body)?));
            (i, result)
        });
    }
    let mut lists = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let Ok((i, result)) = joined else { continue };
        match result {
            Ok(list) => lists.push((i, list)),
            Err(e) => {
                tracing::warn!(error = %e, "collector profiles fetch failed");
                first_error.get_or_insert(e);
            }
        }
    }
    if lists.is_empty() {
        return Err(first_error.unwrap_or_else(|| Error::Fetch {
            url: String::new(),
            message: "no collector URL configured".to_owned(),
        }));
    }
    lists.sort_by_key(|(i, _)| *i);
    Ok(Snapshot::merge(lists.iter().map(|(_, l)| l)))
}

#[cfg(test)]
mod tests;
