//! How Headroom's binaries watch the API server, shared by the collector and the webhook
//! so both behave the same: kube-runtime's `watcher` with a backoff that grows until a
//! LIST succeeds (to minutes while the API server refuses), jitter on the first LIST,
//! each failure classified, logged once per change of state with what to do, counted
//! per resource and reason, and summed up for `/readyz`; discovery before watching an
//! API a server may not serve; and a `User-Agent` that names the caller.
//!
//! What a caller gets from [`watch`] is the watcher's events only: errors are handled
//! here (health, logs, backoff) and never reach the code that applies events.
pub mod backoff;
pub mod failure;
pub mod health;

use std::{fmt::Debug, sync::Arc};

use futures::{Stream, StreamExt as _};
use kube::{
    Api, Client,
    runtime::{utils::StreamBackoff, watcher},
};
use serde::de::DeserializeOwned;

pub use self::{
    backoff::{BackoffConfig, GatedBackoff, Jitter},
    failure::{Class, ErrorReason, Failure},
    health::{Health, Phase, Readiness, Report, Watched},
};

/// Watches `api` as `resource` (a name given to `health`), yielding the watcher's events.
/// The first LIST waits up to `backoff.start_jitter`; failures are retried after
/// [`GatedBackoff`] and reported to `health`. Never ends.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    resource: &'static str,
    health: Arc<Health>,
    backoff: BackoffConfig,
) -> impl Stream<Item = watcher::Event<K>> + Send + 'static
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    health.started(resource);
    let gate = Arc::new(backoff::Gate::default());
    let mut jitter = Jitter::new();
    let start = backoff.start_jitter.mul_f64(jitter.unit());
    let seen = gate.clone();
    let events = watcher(api, config).inspect(move |item| observe(&health, resource, &seen, item));
    let events = StreamBackoff::new(events, GatedBackoff::new(backoff, gate, jitter))
        .filter_map(|item| std::future::ready(item.ok()));
    futures::stream::once(async move {
        tokio::time::sleep(start).await;
        events
    })
    .flatten()
}

/// Feeds one watcher item to the health and the backoff's gate, before `StreamBackoff`
/// sees it.
fn observe<K>(
    health: &Health,
    resource: &'static str,
    gate: &backoff::Gate,
    item: &Result<watcher::Event<K>, watcher::Error>,
) {
    match item {
        Ok(watcher::Event::Init) => health.list_started(resource),
        Ok(watcher::Event::InitApply(_)) => {}
        Ok(watcher::Event::InitDone) => {
            gate.progressed();
            health.listed(resource);
        }
        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
            gate.progressed();
            health.progressed(resource);
        }
        Err(error) => {
            let failure = Failure::of(error);
            gate.failed(failure.class == Class::Refused);
            health.failed(resource, failure);
        }
    }
}

/// How every watch lists: from the API server's watch cache (`resourceVersion=0`, not a
/// quorum read of etcd, which for a field-selected list would read every object of the
/// kind), unpaged (a page limit makes the client drop `resourceVersion=0`).
pub fn cached_list_config() -> watcher::Config {
    let mut config = watcher::Config::default().any_semantic();
    config.page_size = None;
    config
}

/// Whether the API server serves a resource, as discovery says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    Yes,
    /// The group/version is not served (404), or does not list the resource.
    No,
    /// Discovery itself failed; the caller keeps what it assumed.
    Unknown(String),
}

/// Asks discovery (`/api/v1` or `/apis/<group>/<version>`) whether `watched` is served.
/// Discovery is readable by every authenticated client (`system:discovery`).
pub async fn served(client: &Client, watched: &Watched) -> Served {
    let resources = match watched.api_version {
        "v1" => client.list_core_api_resources("v1").await,
        group_version => client.list_api_group_resources(group_version).await,
    };
    match resources {
        Ok(list) if list.resources.iter().any(|r| r.name == watched.resource) => Served::Yes,
        Ok(_) => Served::No,
        Err(kube::Error::Api(status)) if status.code == 404 => Served::No,
        Err(e) => Served::Unknown(e.to_string()),
    }
}

/// `headroom-collector/0.1.0 (node-0000)`, `headroom-webhook/0.1.0`: who is calling, for
/// the API server's audit log and APF.
pub fn user_agent(binary: &str, node: Option<&str>) -> String {
    let version = env!("CARGO_PKG_VERSION");
    match node {
        Some(node) => format!("{binary}/{version} ({node})"),
        None => format!("{binary}/{version}"),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the User-Agent {0:?} is not a valid header value")]
pub struct InvalidUserAgent(String);

/// Prepares `config` for Headroom's clients: every request carries `user_agent`, and
/// kube-client's own retry of 429/503/504 (up to 15 attempts per request, with delays of
/// up to 1000 s) is off, so the watch backoff of this module is the one retry schedule
/// (the one `docs/api-cost.md` states) and every failure is seen and logged here.
pub fn prepare(config: &mut kube::Config, user_agent: &str) -> Result<(), InvalidUserAgent> {
    let value = http::HeaderValue::from_str(user_agent)
        .map_err(|_| InvalidUserAgent(user_agent.to_owned()))?;
    config.default_retry = false;
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((http::header::USER_AGENT, value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_binary_version_and_node() {
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            user_agent("headroom-collector", Some("node-0000")),
            format!("headroom-collector/{version} (node-0000)")
        );
        assert_eq!(
            user_agent("headroom-webhook", None),
            format!("headroom-webhook/{version}")
        );
        let mut config = kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"));
        assert!(config.default_retry);
        prepare(&mut config, "a/1").expect("valid");
        prepare(&mut config, "headroom-webhook/1").expect("valid");
        assert_eq!(config.headers.len(), 1);
        assert_eq!(config.headers[0].1, "headroom-webhook/1");
        assert!(!config.default_retry, "one retry policy: the watch backoff");
        assert!(prepare(&mut config, "bad\nvalue").is_err());
    }

    #[test]
    fn lists_come_from_the_watch_cache_unpaged() {
        let config = cached_list_config();
        assert_eq!(config.list_semantic, watcher::ListSemantic::Any);
        assert_eq!(config.page_size, None);
    }
}
